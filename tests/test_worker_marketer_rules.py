"""The marketer rules of #23 through the worker: Kafka in, Redis state, PostgreSQL out, and
the stored reason naming the values that made each rule fire."""

from __future__ import annotations

from typing import Any

import redis
from sqlalchemy import Engine
from starlette.testclient import TestClient

from decisions.core import keys
from decisions.core.settings import Settings
from decisions.runtime.kafka import ensure_topics
from tests.api_helpers import KeyMaker, auth
from tests.helpers import event, minutes, now, running_worker, wait_for
from tests.test_worker_rules import decided
from tests.test_worker_support import fast, offer_ruleset, produce, publish

pytest_plugins = ["tests.api_fixtures"]


def _view(user: str, at: Any, n: int, product: str, category: str) -> dict[str, Any]:
    return event("product_view", user, at, f"{user}-{n}", product_id=product, category=category)


def test_same_product_three_times_and_category_without_cart(
        settings: Settings, clean_db: Engine) -> None:
    settings = fast(settings)
    document = offer_ruleset("interest", rule_name="same-product-3-in-24h", when={"all": [
        {"field": "event.type", "op": "eq", "value": "product_view"},
        {"field": "state.count_product_view_24h_this_product", "op": "gte", "value": 3}]})
    document["stacking"] = True
    document["rules"].append({
        "name": "running-shoes-browsing", "priority": 5, "when": {"all": [
            {"field": "event.type", "op": "eq", "value": "product_view"},
            {"field": "state.count_product_view_10m_category_running-shoes", "op": "gte",
             "value": 3},
            {"field": "state.count_add_to_cart_10m", "op": "eq", "value": 0}]},
        "then": [{"discount": {"percent": 5, "code": "RUN5", "expires_minutes": 60}}]})
    document["rules"].append({
        "name": "seen-again-within-a-day", "priority": 1, "when": {"all": [
            {"field": "event.type", "op": "eq", "value": "product_view"},
            {"field": "state.since_same_product_view", "op": "between", "value": [1, 86400]}]},
        "then": [{"add_segment": {"segment": "returning-viewer"}}]})
    publish(settings, document)
    ensure_topics(settings)
    t = now() - minutes(60 * 30)
    produce(settings, [
        # p-1 on three days' edges: the third view (hour 29) has only hour 6 within 24 h
        _view("u-a", t, 1, "p-1", "hats"), _view("u-a", t + minutes(60 * 6), 2, "p-1", "hats"),
        _view("u-a", t + minutes(60 * 29), 3, "p-1", "hats"),
        _view("u-a", t + minutes(60 * 29 + 5), 4, "p-1", "hats"),  # now 3 within 24 h
        # three running shoes in 10 minutes, no cart: fires on the third; u-c added to cart
        _view("u-b", t, 1, "rs-1", "running-shoes"),
        _view("u-b", t + minutes(4), 2, "rs-2", "running-shoes"),
        _view("u-b", t + minutes(8), 3, "rs-3", "running-shoes"),
        _view("u-c", t, 1, "rs-1", "running-shoes"),
        event("add_to_cart", "u-c", t + minutes(1), "u-c-2", product_id="rs-1", price=80.0,
              quantity=1, category="running-shoes"),
        _view("u-c", t + minutes(4), 3, "rs-2", "running-shoes"),
        _view("u-c", t + minutes(8), 4, "rs-3", "running-shoes"),
    ])
    with running_worker(settings) as worker:
        wait_for(lambda: worker.stats.processed == 11)
    rows = {(r.user_id, r.event_id, r.rule): r.reason for r in decided(clean_db)}
    assert sorted(rows) == [
        ("u-a", "u-a-2", "seen-again-within-a-day"),  # 6 h after the first, not 0
        ("u-a", "u-a-3", "seen-again-within-a-day"),
        ("u-a", "u-a-4", "same-product-3-in-24h"),
        ("u-a", "u-a-4", "seen-again-within-a-day"),
        ("u-b", "u-b-3", "running-shoes-browsing"),
    ]
    assert rows[("u-a", "u-a-4", "same-product-3-in-24h")][
        "state.count_product_view_24h_this_product"] == 3
    assert rows[("u-a", "u-a-2", "seen-again-within-a-day")][
        "state.since_same_product_view"] == 6 * 3600
    reason = rows[("u-b", "u-b-3", "running-shoes-browsing")]
    assert reason["state.count_product_view_10m_category_running-shoes"] == 3
    assert reason["state.count_add_to_cart_10m"] == 0


def test_a_storewide_rule_without_conditions_fires_within_its_window(
        settings: Settings, clean_db: Engine) -> None:
    settings = fast(settings)
    t = now() - minutes(120)
    document = {"name": "holiday", "rules": [{
        "name": "storewide-20", "priority": 1,
        "active": {"from": (t + minutes(30)).isoformat(), "until": (t + minutes(90)).isoformat()},
        "then": [{"discount": {"percent": 20, "code": "HOLIDAY20", "expires_minutes": 60}}]}]}
    publish(settings, document)
    ensure_topics(settings)
    produce(settings, [
        event("page_view", "u-early", t + minutes(10), "u-early-1", page="home"),
        event("page_view", "u-in", t + minutes(40), "u-in-1", page="home"),
        event("search", "u-in2", t + minutes(50), "u-in2-1", query="socks"),
        event("page_view", "u-late", t + minutes(100), "u-late-1", page="home"),
    ])
    with running_worker(settings) as worker:
        wait_for(lambda: worker.stats.processed == 4)
    rows = decided(clean_db)
    assert [(r.user_id, r.rule) for r in rows] == [("u-in", "storewide-20"),
                                                   ("u-in2", "storewide-20")]
    assert rows[0].payload["discount"]["value"] == 20


def test_free_shipping_once_ever_and_first_visit_through_the_api(
        settings: Settings, clean_db: Engine, client: TestClient, make_key: KeyMaker) -> None:
    settings = fast(settings)
    document = {"name": "perks", "stacking": True, "rules": [
        {"name": "first-visit-ever", "priority": 5, "when": {"all": [
            {"field": "event.type", "op": "eq", "value": "page_view"},
            {"field": "state.first_visit_ever", "op": "eq", "value": True}]},
         # a short offer: without the cap, every page view after it expired would earn one
         "then": [{"discount": {"percent": 15, "code": "HELLO15", "expires_minutes": 1,
                                "max_per_user_ever": 1}}]},
        {"name": "ship-free", "priority": 1, "when": {"all": [
            {"field": "event.type", "op": "eq", "value": "add_to_cart"},
            {"field": "state.cart_value", "op": "gte", "value": 50}]},
         "then": [{"free_shipping": {"code": "SHIPFREE", "min_basket": 50,
                                     "expires_minutes": 100000}}]}]}
    publish(settings, document)
    ensure_topics(settings)
    t = now() - minutes(60 * 24)
    produce(settings, [
        # first visit: three page views 5 minutes apart (one offer: max 1 ever)
        event("page_view", "u-new", t, "n-1", page="home"),
        event("page_view", "u-new", t + minutes(5), "n-2", page="category"),
        event("page_view", "u-new", t + minutes(10), "n-3", page="product"),
        # a second visit a day later: not the first any more
        event("page_view", "u-new", t + minutes(60 * 23), "n-4", page="home"),
        event("add_to_cart", "u-new", t + minutes(60 * 23 + 1), "n-5", product_id="p-1",
              price=60.0, quantity=1),
    ])
    with running_worker(settings) as worker:
        wait_for(lambda: worker.stats.processed == 5)
    rows = decided(clean_db)
    fired = [(r.event_id, r.rule) for r in rows]
    # n-2 and n-3 fired the first-visit rule too (decided), but the cap refused their offers
    assert ("n-1", "first-visit-ever") in fired and ("n-4", "first-visit-ever") not in fired
    assert ("n-5", "ship-free") in fired
    first = next(r for r in rows if r.event_id == "n-1")
    assert first.reason["state.first_visit_ever"] is True
    resp = client.get("/v1/users/u-new/offers", headers=auth(make_key()))
    offers = resp.json()["offers"]
    assert [(o["kind"], o.get(o["kind"])) for o in offers] == [
        ("free_shipping", {"code": "SHIPFREE", "min_basket": 50})]
    assert int(redis_client_for(settings).hget(keys.offers_ever("u-new"),
                                               "perks/first-visit-ever")) == 1


def redis_client_for(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(str(settings.redis_url))


def test_every_catalog_action_has_its_handler() -> None:
    from decisions.runtime.actions import HANDLERS
    from rulesets.language import ACTION_CATALOG

    assert set(HANDLERS) == set(ACTION_CATALOG)
    assert {spec.effect for spec in ACTION_CATALOG.values()} <= {"offer", "recommendation",
                                                                 "segment"}
