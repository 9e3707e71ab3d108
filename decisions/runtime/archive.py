"""The event archive: every accepted event in PostgreSQL, partitioned by month of event time.

``events`` is ``PARTITION BY RANGE (ts)`` with a ``events_default`` partition (made by the
first migration). :class:`EventArchive` creates the monthly partitions ``events_YYYY_MM``
on demand before it inserts, writes a batch in one multi-row ``INSERT … ON CONFLICT DO
NOTHING``, drops whole partitions past the retention, and reads a period back in event-time
order for training, backtests and audits.

A month whose rows already sit in ``events_default`` cannot get its own partition by a
plain ``CREATE … PARTITION OF`` (PostgreSQL refuses while the default holds rows of that
range): such a month stays in the default partition, nothing is refused, and
:meth:`EventArchive.adopt_default` (run by ``prune``) moves it into its own partition later.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from decisions.core.db import utcnow
from decisions.core.events import Event

log = logging.getLogger(__name__)

PARTITION = re.compile(r"^events_(\d{4})_(\d{2})$")
_LOCK = "decisions.core.events.partitions"
_INSERT = text(
    "INSERT INTO events (event_id, ts, user_id, type, properties, received_at) "
    "SELECT r.event_id, r.ts, r.user_id, r.type, r.properties, :now "
    "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
    "AS r(event_id text, ts timestamptz, user_id text, type text, properties jsonb) "
    "ON CONFLICT DO NOTHING"
)


def month_start(ts: datetime) -> datetime:
    ts = ts.astimezone(UTC)
    return datetime(ts.year, ts.month, 1, tzinfo=UTC)


def next_month(start: datetime) -> datetime:
    return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)


def partition_name(start: datetime) -> str:
    return f"events_{start.year:04d}_{start.month:02d}"


@dataclass(frozen=True)
class PruneResult:
    dropped: list[str]
    deleted_from_default: int
    adopted: list[str]


class EventArchive:
    """Writes and reads the ``events`` table; one instance per process is enough."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._ready: set[datetime] = set()  # months with a partition (or settled on default)

    # -- writing -----------------------------------------------------------------------
    def write_batch(self, events: list[Event], conn: Connection | None = None) -> int:
        """Archive ``events`` in one statement; duplicates (same event_id and ts) are skipped.

        The rows travel as one JSON array that PostgreSQL unpacks (``jsonb_to_recordset``):
        one round trip and one bind parameter whatever the batch size, serialised by orjson
        in C rather than adapted value by value in Python (several times cheaper for the
        worker than arrays or a multi-row VALUES list). ``conn``: write inside the caller's
        transaction. Returns how many rows were new.
        """
        if not events:
            return 0
        self.ensure_partitions(e.ts for e in events)
        params = {"rows": orjson.dumps([
            {"event_id": e.event_id, "ts": e.ts, "user_id": e.user_id, "type": e.type,
             "properties": e.properties} for e in events]).decode(), "now": utcnow()}
        if conn is not None:
            return conn.execute(_INSERT, params).rowcount
        with self.engine.begin() as own:
            return own.execute(_INSERT, params).rowcount

    def ensure_partitions(self, timestamps: Iterable[datetime]) -> None:
        """Create the monthly partitions of ``timestamps`` plus this month and the next."""
        this_month = month_start(utcnow())
        wanted = {month_start(ts) for ts in timestamps} | {this_month, next_month(this_month)}
        missing = sorted(wanted - self._ready)
        if not missing:
            return
        with self.engine.connect() as conn:
            existing = set(self._partitions(conn))
        for start in missing:
            if start not in existing:
                self._create(start)
            self._ready.add(start)

    def _create(self, start: datetime) -> None:
        name = partition_name(start)
        ddl = (
            f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF events "
            f"FOR VALUES FROM ('{start.isoformat()}') TO ('{next_month(start).isoformat()}')"
        )
        try:
            with self.engine.begin() as conn:
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": _LOCK})
                conn.execute(text(ddl))
        except DBAPIError as exc:
            code = getattr(exc.orig, "sqlstate", None)
            if code != "23514":  # check_violation: the default partition holds that month
                raise
            log.warning(
                "events of %s stay in events_default (it already holds rows of that month); "
                "EventArchive.prune adopts them into %s later",
                start.strftime("%Y-%m"),
                name,
            )

    # -- maintenance -------------------------------------------------------------------
    def prune(self, retention_days: int, now: datetime | None = None) -> PruneResult:
        """Drop monthly partitions wholly older than the retention; trim the default one."""
        cutoff = (now or utcnow()) - timedelta(days=retention_days)
        adopted = self.adopt_default(before=month_start(now or utcnow()))
        dropped: list[str] = []
        with self.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": _LOCK})
            for start in self._partitions(conn):
                if next_month(start) <= cutoff:
                    conn.execute(text(f"DROP TABLE {partition_name(start)}"))
                    dropped.append(partition_name(start))
                    self._ready.discard(start)
            deleted = conn.execute(
                text("DELETE FROM events_default WHERE ts < :cutoff"), {"cutoff": cutoff}
            ).rowcount
        return PruneResult(dropped, int(deleted or 0), adopted)

    def adopt_default(self, before: datetime | None = None) -> list[str]:
        """Move whole months out of ``events_default`` into their own partitions.

        Only months before ``before`` (default: the current month) are moved, so rows still
        arriving for the current month are not locked out while this runs.
        """
        limit = before or month_start(utcnow())
        with self.engine.connect() as conn:
            months = [
                row[0]
                for row in conn.execute(
                    text(
                        "SELECT DISTINCT date_trunc('month', ts AT TIME ZONE 'UTC') "
                        "FROM events_default WHERE ts < :limit"
                    ),
                    {"limit": limit},
                )
            ]
        adopted = []
        for naive in sorted(months):
            start = naive.replace(tzinfo=UTC)
            name = partition_name(start)
            end = next_month(start)
            with self.engine.begin() as conn:
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": _LOCK})
                if start in self._partitions(conn):
                    continue
                bounds = {"a": start, "b": end}
                conn.execute(text(f"CREATE TABLE {name} (LIKE events INCLUDING DEFAULTS)"))
                conn.execute(
                    text(
                        f"WITH moved AS (DELETE FROM events_default WHERE ts >= :a AND ts < :b "
                        f"RETURNING *) INSERT INTO {name} SELECT * FROM moved"
                    ),
                    bounds,
                )
                conn.execute(
                    text(
                        f"ALTER TABLE events ATTACH PARTITION {name} "
                        f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
                    )
                )
            self._ready.add(start)
            adopted.append(name)
        return adopted

    @staticmethod
    def _partitions(conn: Connection) -> list[datetime]:
        names = conn.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'events'::regclass"
            )
        ).scalars()
        months = []
        for name in names:
            match = PARTITION.match(name)
            if match:
                months.append(datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC))
        return sorted(months)

    # -- reading -----------------------------------------------------------------------
    def read(
        self,
        start: datetime,
        end: datetime,
        batch: int = 5000,
        types: Iterable[str] | None = None,
    ) -> Iterator[Event]:
        """Events with ``start <= ts < end`` in event-time order (ties by event_id)."""
        where = "ts >= :start AND ts < :end"
        params: dict[str, Any] = {"start": start, "end": end}
        if types is not None:
            where += " AND type = ANY(:types)"
            params["types"] = list(types)
        sql = text(
            f"SELECT event_id, type, user_id, ts, properties FROM events WHERE {where} "
            "ORDER BY ts, event_id"
        )
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(
                sql, params
            )
            for event_id, etype, user_id, ts, props in result:
                yield Event(event_id, etype, user_id, ts.astimezone(UTC), props or {})

    def latest(self, user_id: str) -> Event | None:
        """The user's most recent archived event (admin try-it: "their last event")."""
        with self.engine.connect() as conn:
            row = conn.execute(text(
                "SELECT event_id, type, user_id, ts, properties FROM events WHERE user_id = :u "
                "ORDER BY ts DESC, event_id DESC LIMIT 1"), {"u": user_id}).first()
        if row is None:
            return None
        return Event(row[0], row[1], row[2], row[3].astimezone(UTC), row[4] or {})

    def recent_users(self, limit: int = 30) -> list[str]:
        """Users with the most recent events, newest first (a picker of real shoppers)."""
        with self.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT user_id FROM events WHERE ts > now() - interval '30 days' "
                "GROUP BY user_id ORDER BY max(ts) DESC LIMIT :n"), {"n": limit})
            return [r[0] for r in rows]

    def count(self, start: datetime, end: datetime) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    text("SELECT count(*) FROM events WHERE ts >= :a AND ts < :b"),
                    {"a": start, "b": end},
                ).scalar_one()
            )

    def bounds(self) -> tuple[datetime, datetime] | None:
        """The first and last event time archived, or None when the archive is empty."""
        with self.engine.connect() as conn:
            row = conn.execute(text("SELECT min(ts), max(ts) FROM events")).one()
        if row[0] is None:
            return None
        return row[0].astimezone(UTC), row[1].astimezone(UTC)
