"""Bad records go to the dead-letter topic (original bytes, reason); duplicates are dropped."""

from __future__ import annotations

import orjson
import redis
from prometheus_client import REGISTRY
from sqlalchemy import Engine

from decisions.core.settings import Settings
from decisions.runtime.kafka import ensure_topics
from tests.helpers import event, minutes, now, running_worker, wait_for
from tests.test_worker_support import (
    count,
    fast,
    offer_ruleset,
    produce,
    produce_raw,
    publish,
    read_topic,
)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_bad_records_are_dead_lettered_and_processing_continues(
        settings: Settings, redis_client: redis.Redis, clean_db: Engine) -> None:
    settings = fast(settings, max_event_bytes=2000)
    publish(settings, offer_ruleset())
    ensure_topics(settings)
    t0 = now() - minutes(5)
    good = event("add_to_cart", "u-1", t0, product_id="p-1", price=10.0, quantity=1)
    missing = event("page_view", "u-2", t0, page="home")
    del missing["event_id"]
    mistyped = event("add_to_cart", "u-3", t0, product_id="p-1", price="ten", quantity=1)
    unknown = event("teleport", "u-4", t0)
    oversize = event("search", "u-5", t0, query="x" * 3000)
    bad = {
        "invalid_json": b'{"event_id": "e1", "type": ',
        "not_utf8": b"\xff\xfe\x00garbage",
        "missing": orjson.dumps(missing),
        "mistyped": orjson.dumps(mistyped),
        "unknown": orjson.dumps(unknown),
        "oversize": orjson.dumps(oversize),
        "not_object": b"[1, 2, 3]",
    }
    before_dead = metric("decisions_events_dead_lettered_total", reason="invalid_event")
    before_dup = metric("decisions_events_duplicates_total")
    before_cart = metric("decisions_events_processed_total", type="add_to_cart")
    produce_raw(settings, [("u-x", value) for value in bad.values()] + [("u-6", None)])
    produce(settings, [good, good])  # the same event twice in one batch
    with running_worker(settings) as worker:
        wait_for(lambda: worker.stats.dead_lettered == len(bad) + 1
                 and worker.stats.processed == 1 and worker.stats.duplicates == 1)
        # redelivered after its effects were stored: dropped without a second decision
        produce(settings, [good, event("page_view", "u-1", t0 + minutes(1), page="home")])
        wait_for(lambda: worker.stats.processed == 2 and worker.stats.duplicates == 2)

    records = read_topic(settings, settings.dead_letter_topic, len(bad) + 1)
    assert len(records) == len(bad) + 1  # one each, nothing twice
    by_value = {r.value: dict(r.headers) for r in records}
    reasons = {name: by_value[value]["dlq.reason"].decode() for name, value in bad.items()}
    assert reasons == {
        "invalid_json": "invalid_json", "not_utf8": "invalid_json", "missing": "invalid_event",
        "mistyped": "invalid_event", "unknown": "unknown_type", "oversize": "too_large",
        "not_object": "invalid_event",
    }
    assert b"event_id: required" in by_value[bad["missing"]]["dlq.detail"]
    assert b"properties.price" in by_value[bad["mistyped"]]["dlq.detail"]
    assert by_value[b""]["dlq.reason"] == b"empty"
    first = by_value[bad["invalid_json"]]
    assert first["dlq.topic"].decode() == settings.events_topic
    assert int(first["dlq.offset"]) >= 0

    assert count(clean_db, "SELECT count(*) FROM decisions") == 1
    assert count(clean_db, "SELECT count(*) FROM events") == 2
    assert redis_client.hlen("d:offers:{u-1}") == 1
    assert redis_client.ttl(f"d:seen:{{u-1}}:{good['event_id']}") > 24 * 3600
    assert metric("decisions_events_dead_lettered_total", reason="invalid_event") \
        - before_dead == 3
    assert metric("decisions_events_duplicates_total") - before_dup == 2
    assert metric("decisions_events_processed_total", type="add_to_cart") - before_cart == 1
