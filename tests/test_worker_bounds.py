"""Records no event may be: each is dead-lettered with its reason, the worker goes on (#17).

On the code before #17 each of these stopped the worker for good (it replayed the record
on every restart) or was decided although it must not be (a forged timer)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as search
from hypothesis import strategies as st
from sqlalchemy import Engine

from decisions.core.events import format_ts
from decisions.core.settings import Settings
from decisions.runtime.kafka import ensure_topics
from decisions.runtime.worker import Worker
from tests.helpers import event, minutes, now, wait_for
from tests.test_worker_support import count, fast, offer_ruleset, produce_raw, publish, read_topic


@contextmanager
def worker_thread(settings: Settings) -> Iterator[tuple[Worker, threading.Thread]]:
    worker = Worker(settings)
    worker.start()
    thread = threading.Thread(target=worker.run, name="worker", daemon=True)
    thread.start()
    try:
        yield worker, thread
    finally:
        worker.request_stop()
        thread.join(30)
        worker.close()


def cart(user: str = "u-1", **changes: Any) -> dict[str, Any]:
    props = {"product_id": "p-1", "price": 10.0, "quantity": 1, **changes.pop("properties", {})}
    return {**event("add_to_cart", user, now() - minutes(1), **props), **changes}


def raw(data: Any) -> bytes:
    return data if isinstance(data, bytes) else orjson.dumps(data)


BAD: dict[str, tuple[Any, str]] = {
    "ts in year 9999": (cart(ts="9999-12-31T23:59:59Z"), "out_of_window"),
    "ts of year 1 with +01:00": (cart(ts="0001-01-01T00:00:00+01:00"), "invalid_event"),
    "NUL in user_id": (cart(user="u\x00x"), "invalid_event"),
    "NUL in a property": (cart(properties={"category": "a\x00b"}), "invalid_event"),
    "price 1e308 times 10": (cart(properties={"price": 1e308, "quantity": 10}), "invalid_event"),
    "far future (fires a discount)": (
        cart(ts=format_ts(now() + timedelta(days=3000))), "out_of_window"),
    "type {}": (cart(type={}), "invalid_event"),
    "quantity 2**64": (b'{"event_id": "q", "type": "add_to_cart", "user_id": "u-1", "ts": "'
                       + format_ts(now()).encode() + b'", "properties": {"product_id": "p",'
                       b' "price": 1, "quantity": 18446744073709551616}}', "invalid_event"),
    "nested 300 deep": (orjson.dumps(cart(properties={"deep": "D"})).replace(
        b'"D"', b"[" * 300 + b"]" * 300), "invalid_event"),
    "forged timer": ({**event("timer", "u-1", now() - minutes(1), timer="idle_30m")},
                     "forged_timer"),
}


def test_each_bad_record_is_dead_lettered_and_the_worker_goes_on(
        settings: Settings, redis_client: redis.Redis, clean_db: Engine) -> None:
    settings = fast(settings, max_event_bytes=64 * 1024)
    publish(settings, offer_ruleset())
    ensure_topics(settings)
    good = cart("u-good")
    produce_raw(settings, [("u-1", raw(data)) for data, _ in BAD.values()]
                + [("u-good", raw(good))])
    with worker_thread(settings) as (worker, thread):
        wait_for(lambda: not thread.is_alive() or (
            worker.stats.dead_lettered == len(BAD) and worker.stats.processed == 1))
        assert thread.is_alive()
    records = read_topic(settings, settings.dead_letter_topic, len(BAD))
    reasons = {r.value: dict(r.headers)["dlq.reason"].decode() for r in records}
    assert {name: reasons.get(raw(data)) for name, (data, _) in BAD.items()} \
        == {name: reason for name, (_, reason) in BAD.items()}
    assert count(clean_db, "SELECT count(*) FROM decisions") == 1  # the good one's offer
    assert redis_client.hlen("d:offers:{u-1}") == 0


PARTITIONS = "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass"


def test_spread_timestamps_do_not_create_hundreds_of_partitions(
        settings: Settings, clean_db: Engine) -> None:
    settings = fast(settings)
    ensure_topics(settings)
    start = now() - timedelta(days=40 * 365)
    spread = [event("page_view", f"u-{i}", start + timedelta(days=30 * i), page="home")
              for i in range(500)]  # one event a month over 40 years, and some future ones
    before = count(clean_db, PARTITIONS)
    produce_raw(settings, [(e["user_id"], raw(e)) for e in spread])
    with worker_thread(settings) as (worker, thread):
        wait_for(lambda: worker.stats.dead_lettered + worker.stats.processed == len(spread))
        assert thread.is_alive()
    after = count(clean_db, PARTITIONS)
    assert worker.stats.processed <= 3  # those within the last 48 hours (and 5 minutes ahead)
    assert after - before <= 3


junk = st.one_of(
    st.binary(max_size=40),
    # integers orjson can write (a producer could not send a larger one as a JSON number)
    st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1)
                 | st.floats(allow_nan=False)
                 | st.text(max_size=10),
                 lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
    .map(orjson.dumps),
)
fields = st.sampled_from(["event_id", "user_id", "type", "ts", "properties"])
json_any = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1)
                        | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
                        lambda inner: st.lists(inner, max_size=2)
                        | st.dictionaries(st.text(max_size=4), inner, max_size=2), max_leaves=6)


@st.composite
def records(draw: st.DrawFn) -> bytes:
    """A valid event, one with a field replaced by anything, or junk bytes."""
    kind = draw(st.sampled_from(["valid", "mutated", "junk"]))
    if kind == "junk":
        return draw(junk)
    data = cart(f"u-{draw(st.integers(0, 5))}", properties={
        "price": draw(st.floats(0, 1e6)), "quantity": draw(st.integers(1, 100))})
    if kind == "mutated":
        data[draw(fields)] = draw(json_any)
    return orjson.dumps(data)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_generated_records_are_decided_or_dead_lettered(
        settings: Settings, redis_client: redis.Redis, clean_db: Engine) -> None:
    """Batches of generated records through the real worker: every record is decided or
    dead-lettered (or dropped as a repeat), the worker stays alive, its lag drains.
    (The worker's thread draws on ``random`` meanwhile: Hypothesis' warning about it is
    not about these strategies.)"""
    settings = fast(settings)
    publish(settings, offer_ruleset())
    ensure_topics(settings)
    seen = {"records": 0, "batches": 0}
    with worker_thread(settings) as (worker, thread):

        @search(max_examples=15, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))
        @given(st.lists(records(), min_size=1, max_size=20))
        def check(batch: list[bytes]) -> None:
            produce_raw(settings, [("k", value) for value in batch])
            seen["records"] += len(batch)
            seen["batches"] += 1
            stats = worker.stats
            wait_for(lambda: not thread.is_alive() or stats.processed + stats.dead_lettered
                     + stats.duplicates >= seen["records"], timeout=30)
            assert thread.is_alive()

        check()
        assert worker._consumer is not None
        wait_for(lambda: worker._consumer is not None and worker._consumer.lag() == 0)
    stats = worker.stats
    assert stats.processed + stats.dead_lettered + stats.duplicates == seen["records"]
    print(f"worker fuzz: {seen['batches']} batches, {seen['records']} records: "
          f"{stats.processed} decided, {stats.dead_lettered} dead-lettered, "
          f"{stats.duplicates} repeats")

