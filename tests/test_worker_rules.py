"""Decisions while consuming: event-time windows with late events, hot reload of a
ruleset, customer attributes (cache invalidated on change), consent, model scores."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
from sqlalchemy import Engine, text

from decisions.core.settings import Settings
from decisions.runtime.kafka import ensure_topics
from decisions.runtime.worker import Worker
from tests.helpers import event, minutes, now, running_worker, wait_for
from tests.test_worker_support import count, fast, offer_ruleset, produce, publish


def decided(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT user_id, event_id, ruleset, ruleset_version, rule, payload, reason,"
            " model_versions FROM decisions ORDER BY user_id, event_id")))


def test_late_and_out_of_order_events_land_in_their_event_time_window(
        settings: Settings, clean_db: Engine) -> None:
    settings = fast(settings)
    publish(settings, offer_ruleset("views", rule_name="four-views-5m", when={"all": [
        {"field": "event.type", "op": "eq", "value": "product_view"},
        {"field": "state.count_product_view_5m", "op": "gte", "value": 4}]}))
    ensure_topics(settings)
    t = now() - minutes(60)

    def view(user: str, minute: int) -> dict[str, Any]:
        return event("product_view", user, t + minutes(minute), f"{user}-{minute}",
                     product_id=f"p-{minute}")

    produce(settings, [
        # the 4th arrival is late (minute 0): counted by arrival it would fire; by event
        # time its window holds only itself. Minute 13 sees 10, 11, 12, 13.
        view("u-late", 10), view("u-late", 11), view("u-late", 12), view("u-late", 0),
        view("u-late", 13),
        # the late minute-8 view lands in minute 13's window: 8, 10, 12, 13
        view("u-fill", 10), view("u-fill", 12), view("u-fill", 8), view("u-fill", 13),
        # newest first: each event sees only what happened before it in event time
        view("u-rev", 4), view("u-rev", 3), view("u-rev", 2), view("u-rev", 1),
    ])
    with running_worker(settings) as worker:
        wait_for(lambda: worker.stats.processed == 13)
    rows = decided(clean_db)
    assert [(r.user_id, r.event_id) for r in rows] == [("u-fill", "u-fill-13"),
                                                       ("u-late", "u-late-13")]
    assert all(r.reason["state.count_product_view_5m"] == 4 for r in rows)


def test_hot_reload_of_a_ruleset_while_consuming(settings: Settings, clean_db: Engine,
                                                 redis_client: redis.Redis) -> None:
    settings = fast(settings)
    publish(settings, offer_ruleset(percent=10))
    ensure_topics(settings)
    t = now() - minutes(5)
    first = [event("add_to_cart", f"a-{i}", t, product_id="p", price=5.0, quantity=1)
             for i in range(20)]
    second = [event("add_to_cart", f"b-{i}", t, product_id="p", price=5.0, quantity=1)
              for i in range(20)]
    with running_worker(settings) as worker:
        produce(settings, first)
        wait_for(lambda: worker.stats.processed == 20)
        assert publish(settings, offer_ruleset(percent=20)) == 2
        wait_for(lambda: worker.runtime.marker == "carts:2")
        produce(settings, second)
        wait_for(lambda: worker.stats.processed == 40)
    rows = decided(clean_db)
    assert len(rows) == 40
    assert {(r.user_id[0], r.ruleset_version, r.payload["discount"]["value"]) for r in rows} \
        == {("a", 1, 10), ("b", 2, 20)}
    assert worker.stats.reloads >= 1
    offer = redis_client.hvals("d:offers:{b-7}")
    assert len(offer) == 1 and b'"ruleset_version":2' in offer[0]


class FakeScorer:
    """The ``decisions.runtime.ml.scoring.Scorer`` interface; fails on huge carts."""

    def __init__(self) -> None:
        self.refreshed = 0

    def refresh(self) -> bool:
        self.refreshed += 1
        raise RuntimeError("registry away")

    def score(self, snapshot: dict[str, Any], customer: dict[str, Any] | None,
              ) -> tuple[dict[str, float], dict[str, int]]:
        if snapshot.get("cart_value", 0) > 1000:
            raise ValueError("model exploded")
        return {"purchase_intent": 0.9}, {"purchase_intent": 3}


def test_customer_attributes_consent_and_scores(settings: Settings, clean_db: Engine) -> None:
    settings = fast(settings)
    publish(settings, offer_ruleset("tiers", rule_name="gold-cart", when={"all": [
        {"field": "event.type", "op": "eq", "value": "add_to_cart"},
        {"field": "customer.tier", "op": "eq", "value": "gold"}]}))
    publish(settings, offer_ruleset("intent", rule_name="intent-cart", when={"all": [
        {"field": "event.type", "op": "eq", "value": "add_to_cart"},
        {"field": "score.purchase_intent", "op": "gte", "value": 0.5}]}))
    with clean_db.begin() as conn:
        conn.execute(text(
            "INSERT INTO customers (user_id, tier, consent, segments, attributes, updated_at)"
            " VALUES ('gold', 'gold', true, '{}', '{}', now()),"
            " ('silver', 'silver', true, '{}', '{}', now()),"
            " ('no-consent', 'gold', false, '{}', '{}', now()),"
            " ('revokes', 'gold', true, '{}', '{}', now())"))
    ensure_topics(settings)
    t = now() - minutes(5)

    def cart(user: str, price: float = 5.0) -> dict[str, Any]:
        return event("add_to_cart", user, t, product_id="p", price=price, quantity=1)

    scorer = FakeScorer()
    with running_worker(settings, scorer=scorer) as worker:
        produce(settings, [cart("gold"), cart("silver"), cart("no-consent"),
                           event("consent", "revokes", t, granted=False), cart("revokes"),
                           cart("boom", price=5000.0)])
        wait_for(lambda: worker.stats.processed == 6)
        with clean_db.begin() as conn:
            conn.execute(text("UPDATE customers SET tier = 'gold', updated_at = now()"
                              " WHERE user_id = 'silver'"))
        wait_for(lambda: worker.redis.get("d:cust:{silver}") is None)  # invalidated
        produce(settings, [cart("silver")])
        wait_for(lambda: worker.stats.processed == 7)
    rows = decided(clean_db)
    fired = sorted((r.user_id, r.rule) for r in rows)
    assert fired == [("gold", "gold-cart"), ("gold", "intent-cart"),
                     ("silver", "gold-cart"), ("silver", "intent-cart"),
                     ("silver", "intent-cart")]
    intent = [r for r in rows if r.rule == "intent-cart"]
    assert all(r.model_versions == {"purchase_intent": 3} for r in intent)
    assert worker.stats.scorer_errors == 1  # "boom": decided without scores
    assert scorer.refreshed >= 1  # a failing refresh did not stop the worker
    assert count(clean_db, "SELECT count(*) FROM customers WHERE user_id = 'revokes'"
                           " AND NOT consent") == 1


def test_consent_revoked_in_one_batch_holds_for_the_batch_staged_meanwhile(
        settings: Settings, clean_db: Engine) -> None:
    # batches of two, each staged (its customers read) before the previous one is decided:
    # the revocation decided in batch 1 must still stop the rule in batch 2
    settings = fast(settings, batch_size=2)
    publish(settings, offer_ruleset("tiers", rule_name="gold-cart", when={"all": [
        {"field": "event.type", "op": "eq", "value": "add_to_cart"},
        {"field": "customer.tier", "op": "eq", "value": "gold"}]}))
    with clean_db.begin() as conn:
        conn.execute(text(
            "INSERT INTO customers (user_id, tier, consent, segments, attributes, updated_at)"
            " VALUES ('r', 'gold', true, '{}', '{}', now()), ('g', 'gold', true, '{}', '{}',"
            " now())"))
    ensure_topics(settings)
    t = now() - minutes(5)

    def cart(user: str) -> dict[str, Any]:
        return event("add_to_cart", user, t, product_id="p", price=5.0, quantity=1)

    produce(settings, [event("page_view", "r", t, page="home"),
                       event("consent", "r", t, granted=False), cart("r"),
                       event("page_view", "r", t, page="home"), cart("g")])
    worker = Worker(settings)
    original = worker.customers.set_consent

    def slow_set_consent(user_id: str, granted: bool) -> None:
        time.sleep(0.3)  # batch 2's customers are surely read before the change
        original(user_id, granted)

    worker.customers.set_consent = slow_set_consent  # type: ignore[method-assign]
    worker.start()
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: worker.stats.processed == 5)
    finally:
        worker.request_stop()
        thread.join(30)
        worker.close()
    assert [(r.user_id, r.rule) for r in decided(clean_db)] == [("g", "gold-cart")]
