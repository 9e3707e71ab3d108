"""Sequences and absences over several events of one user live in Redis, not in the engine:
a sequence's first half survives a worker restart, and an idle deadline becomes a timer
event that fires the cart-abandonment rule."""

from __future__ import annotations

from datetime import datetime

import redis

from decisions.core import keys
from decisions.core.settings import Settings
from decisions.runtime.kafka import Producer, ensure_topics
from decisions.runtime.offers import active_offers
from tests.helpers import event, import_starter, minutes, now, running_worker, wait_for


def produce(settings: Settings, *events: dict) -> None:
    producer = Producer(settings)
    producer.send_many(settings.events_topic, [(e["user_id"], e) for e in events])
    producer.close()


def rules_offered(client: redis.Redis, user: str) -> list[str]:
    return sorted(o["rule"] for o in active_offers(client, user, datetime.now().astimezone()))


def test_sequence_state_survives_a_worker_restart(settings: Settings,
                                                  redis_client: redis.Redis) -> None:
    """Viewed a product, then (after a restart, in a new worker) added it within 10 minutes."""
    import_starter(settings)
    ensure_topics(settings)
    t0 = now() - minutes(20)
    produce(settings,
            event("product_view", "u-seq", t0 + minutes(12), product_id="p-5"),
            event("product_view", "u-slow", t0, product_id="p-5"))
    with running_worker(settings) as first:
        wait_for(lambda: first.stats.processed >= 2)
    assert rules_offered(redis_client, "u-seq") == []

    produce(settings,
            event("add_to_cart", "u-seq", t0 + minutes(15), product_id="p-5", price=30.0,
                  quantity=1),
            event("add_to_cart", "u-slow", t0 + minutes(15), product_id="p-5", price=30.0,
                  quantity=1))
    with running_worker(settings) as second:  # a new process's engine: nothing carried over
        wait_for(lambda: second.stats.processed >= 2)
        offered = wait_for(lambda: rules_offered(redis_client, "u-seq"))
    assert second.stats.processed == 2  # the first worker's events were committed, not replayed
    assert offered == ["viewed-then-added"]
    assert rules_offered(redis_client, "u-slow") == []  # 15 minutes apart: too slow


def test_idle_cart_fires_the_abandonment_timer(settings: Settings,
                                               redis_client: redis.Redis) -> None:
    """Events 31+ minutes old: their idle_30m deadlines are already due when processed."""
    import_starter(settings)
    ensure_topics(settings)
    t = now()
    produce(
        settings,
        event("add_to_cart", "u-idle", t - minutes(31), product_id="p-1", price=40.0,
              quantity=1),
        # bought what was in the cart: the timer fires but the cart is empty
        event("add_to_cart", "u-bought", t - minutes(36), product_id="p-1", price=40.0,
              quantity=1),
        event("purchase", "u-bought", t - minutes(33), order_id="o-1", total=40.0,
              items=[{"product_id": "p-1", "price": 40.0, "quantity": 1}]),
        # still active a minute ago: the deadline moved 30 minutes past that
        event("add_to_cart", "u-active", t - minutes(31), product_id="p-1", price=40.0,
              quantity=1),
        event("page_view", "u-active", t - minutes(1), page="home"),
    )
    with running_worker(settings) as worker:
        offered = wait_for(lambda: rules_offered(redis_client, "u-idle"))
        wait_for(lambda: worker.stats.processed >= 7)  # 5 events + 2 timer events
    assert offered == ["cart-abandonment"]
    assert rules_offered(redis_client, "u-bought") == []
    assert rules_offered(redis_client, "u-active") == []
    due = redis_client.zscore(keys.deadlines("u-active"), "u-active|idle_30m")
    assert due is not None and abs(due - (t + minutes(29)).timestamp() * 1000) < 1000
    assert redis_client.zscore(keys.deadlines("u-idle"), "u-idle|idle_30m") is None  # fired
