"""The event archive against real PostgreSQL: partitions, batches, retention, ordered reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text

from decisions.core.events import Event
from decisions.runtime.archive import EventArchive, month_start, next_month, partition_name


def ev(i: int, ts: datetime, user: str = "u-1", etype: str = "page_view") -> Event:
    return Event(f"e-{i}", etype, user, ts, {"page": "home", "n": i})


def partitions(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'events'::regclass"
                )
            ).scalars()
        )


def rows_in(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def drop_month_partitions(engine: Engine) -> None:
    with engine.begin() as conn:
        for name in partitions(engine) - {"events_default"}:
            conn.execute(text(f"DROP TABLE {name}"))


def test_month_helpers() -> None:
    start = month_start(datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
    assert start == datetime(2026, 12, 1, tzinfo=UTC)
    assert next_month(start) == datetime(2027, 1, 1, tzinfo=UTC)
    assert partition_name(start) == "events_2026_12"


def test_write_batch_creates_partitions_and_skips_duplicates(clean_db: Engine) -> None:
    drop_month_partitions(clean_db)
    archive = EventArchive(clean_db)
    t0 = datetime(2025, 3, 31, 23, 0, tzinfo=UTC)
    batch = [ev(i, t0 + timedelta(minutes=30 * i)) for i in range(4)]  # March and April
    assert archive.write_batch(batch) == 4
    assert archive.write_batch(batch[:2] + [ev(9, t0)]) == 1  # only e-9 is new
    names = partitions(clean_db)
    assert {"events_2025_03", "events_2025_04"} <= names
    now = month_start(datetime.now(UTC))
    assert {partition_name(now), partition_name(next_month(now))} <= names
    assert rows_in(clean_db, "events_2025_03") == 3
    assert rows_in(clean_db, "events_2025_04") == 2
    assert rows_in(clean_db, "events_default") == 0


def test_read_returns_events_in_time_order(clean_db: Engine) -> None:
    archive = EventArchive(clean_db)
    t0 = datetime(2025, 5, 10, tzinfo=UTC)
    events = [ev(i, t0 + timedelta(hours=(7 * i) % 10), user=f"u-{i % 3}") for i in range(10)]
    archive.write_batch(events)
    got = list(archive.read(t0 + timedelta(hours=2), t0 + timedelta(hours=8), batch=3))
    assert [e.ts for e in got] == sorted(e.ts for e in got)
    assert {e.event_id for e in got} == {
        e.event_id for e in events if t0 + timedelta(hours=2) <= e.ts < t0 + timedelta(hours=8)
    }
    first = next(iter(got))
    original = next(e for e in events if e.event_id == first.event_id)
    assert first == original  # properties and ids come back as they went in
    assert archive.bounds() == (min(e.ts for e in events), max(e.ts for e in events))


def test_month_already_in_default_is_kept_then_adopted(clean_db: Engine) -> None:
    drop_month_partitions(clean_db)
    t0 = datetime(2024, 2, 10, tzinfo=UTC)
    with clean_db.begin() as conn:  # an old row that landed in the default partition
        conn.execute(
            text(
                "INSERT INTO events (event_id, ts, user_id, type, properties, received_at) "
                "VALUES ('old', :ts, 'u', 'page_view', '{}', now())"
            ),
            {"ts": t0},
        )
    archive = EventArchive(clean_db)
    assert archive.write_batch([ev(1, t0 + timedelta(days=1))]) == 1  # no error: default
    assert "events_2024_02" not in partitions(clean_db)
    assert rows_in(clean_db, "events_default") == 2

    result = archive.prune(retention_days=100_000)
    assert result.adopted == ["events_2024_02"]
    assert rows_in(clean_db, "events_2024_02") == 2
    assert rows_in(clean_db, "events_default") == 0
    assert archive.write_batch([ev(1, t0 + timedelta(days=1)), ev(2, t0)]) == 1  # PK holds


def test_prune_drops_whole_old_partitions(clean_db: Engine) -> None:
    drop_month_partitions(clean_db)
    archive = EventArchive(clean_db)
    now = datetime(2026, 6, 15, tzinfo=UTC)
    archive.write_batch(
        [ev(1, datetime(2026, 1, 20, tzinfo=UTC)), ev(2, datetime(2026, 3, 5, tzinfo=UTC))]
    )
    result = archive.prune(retention_days=100, now=now)  # cutoff 2026-03-07
    assert result.dropped == ["events_2026_01"]  # March still has days inside the retention
    assert "events_2026_03" in partitions(clean_db)
    assert [e.event_id for e in archive.read(datetime(2000, 1, 1, tzinfo=UTC), now)] == ["e-2"]
