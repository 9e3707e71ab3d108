"""The first end-to-end decision, through a real broker, Redis and PostgreSQL."""

from __future__ import annotations

from datetime import datetime

import redis

from decisions.core.settings import Settings
from decisions.runtime.kafka import Producer, ensure_topics
from decisions.runtime.offers import active_offers
from tests.helpers import event, import_starter, minutes, now, running_worker, wait_for


def produce(settings: Settings, *events: dict) -> None:
    producer = Producer(settings)
    producer.send_many(settings.events_topic, [(e["user_id"], e) for e in events])
    producer.close()


def offers_of(client: redis.Redis, user: str) -> list[dict]:
    return active_offers(client, user, datetime.now().astimezone())


def test_high_value_cart_offer_end_to_end(settings: Settings, redis_client: redis.Redis) -> None:
    import_starter(settings)
    ensure_topics(settings)
    t0 = now() - minutes(10)
    dup = event(
        "add_to_cart",
        "u-hit",
        t0 + minutes(2),
        product_id="p-1",
        price=150.0,
        quantity=1,
        category="shoes",
    )
    produce(
        settings,
        # hit: checkout viewed 2 minutes before the cart passes $200; the cart event twice
        event("page_view", "u-hit", t0, page="checkout"),
        event("add_to_cart", "u-hit", t0 + minutes(1), product_id="p-2", price=80.0, quantity=1),
        dup,
        dup,
        # miss: the checkout view is 6 minutes before the cart event
        event("page_view", "u-late", t0, page="checkout"),
        event("add_to_cart", "u-late", t0 + minutes(6), product_id="p-1", price=250.0, quantity=1),
        # removes count: the cart drops back under $200 before the checkout view
        event("add_to_cart", "u-removed", t0, product_id="p-1", price=150.0, quantity=2),
        event(
            "remove_from_cart",
            "u-removed",
            t0 + minutes(1),
            product_id="p-1",
            price=150.0,
            quantity=1,
        ),
        event("page_view", "u-removed", t0 + minutes(2), page="checkout"),
    )
    with running_worker(settings) as worker:
        offers = wait_for(lambda: offers_of(redis_client, "u-hit"))
        wait_for(lambda: worker.stats.processed + worker.stats.duplicates >= 9)
    assert len(offers) == 1
    offer = offers[0]
    assert offer["rule"] == "high-value-cart"
    assert offer["ruleset_version"] == 1
    assert offer["discount"] == {"type": "percent", "value": 10, "code": "CART10"}
    assert offer["reason"].startswith("rule high-value-cart")
    assert offers_of(redis_client, "u-late") == []
    assert offers_of(redis_client, "u-removed") == []
    assert worker.stats.duplicates == 1
    assert redis_client.hlen("d:offers:{u-hit}") == 1
