"""A record that fails its own processing (after it parsed) never stops the stream: the
worker decides the batch's records one at a time, dead-letters the one that fails with
its reason, commits past it and goes on. Only outages of a service pause and retry."""

from __future__ import annotations

import threading
from typing import Any

import redis
from sqlalchemy import Engine
from sqlalchemy.exc import DataError

from decisions.core.settings import Settings
from decisions.runtime.kafka import ensure_topics
from decisions.runtime.worker import Worker
from tests.helpers import event, minutes, now, wait_for
from tests.test_worker_support import count, fast, offer_ruleset, produce, publish, read_topic


def test_a_record_failing_its_own_processing_is_dead_lettered_and_the_rest_decided(
        settings: Settings, redis_client: redis.Redis, clean_db: Engine) -> None:
    settings = fast(settings)
    publish(settings, offer_ruleset())
    ensure_topics(settings)
    t0 = now() - minutes(5)
    carts = [event("add_to_cart", f"u-{i}", t0 + minutes(i / 10), product_id="p-1",
                   price=20.0, quantity=1) for i in range(8)]
    in_decision, in_archive = carts[2]["event_id"], carts[5]["event_id"]
    produce(settings, carts)

    worker = Worker(settings)
    decide = worker.decider.evaluate
    write = worker.decisions.write

    def evaluate(ev: Any, *args: Any, **kwargs: Any) -> Any:
        if ev.event_id == in_decision:  # e.g. a value an action cannot compute with
            raise OverflowError("date value out of range")
        return decide(ev, *args, **kwargs)

    def archive(events: list[Any], rows: list[dict[str, Any]]) -> None:
        if any(e.event_id == in_archive for e in events):  # e.g. a string PostgreSQL refuses
            raise DataError("INSERT INTO events ...", {}, ValueError("invalid byte sequence"))
        write(events, rows)

    worker.decider.evaluate = evaluate  # type: ignore[method-assign]
    worker.decisions.write = archive  # type: ignore[method-assign]
    worker.start()
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: worker.stats.dead_lettered == 2 and worker.stats.processed >= 6,
                 timeout=60)
    finally:
        worker.request_stop()
        thread.join(30)
        worker.close()
    assert not thread.is_alive()

    letters = read_topic(settings, settings.dead_letter_topic, 2)
    reasons = {dict(r.headers)["dlq.reason"].decode() for r in letters}
    details = b" ".join(dict(r.headers)["dlq.detail"] for r in letters)
    assert reasons == {"processing_error"}
    assert b"OverflowError" in details and b"DataError" in details
    # every other shopper was decided: one offer each, archived once (the record refused by
    # the archive had its offer stored already: Redis is written before PostgreSQL)
    for i, cart in enumerate(carts):
        if cart["event_id"] != in_archive:
            held = redis_client.hlen(f"d:offers:{{u-{i}}}")
            assert held == (0 if cart["event_id"] == in_decision else 1), i
    assert count(clean_db, "SELECT count(*) FROM events") == 6
    assert count(clean_db, "SELECT count(*) FROM decisions") == 6

    # the offsets were committed past both: a new worker of the group finds nothing to do
    again = Worker(settings)
    try:
        stats = again.run(idle_timeout=3)
    finally:
        again.close()
    assert stats.processed == 0 and stats.dead_lettered == 0
