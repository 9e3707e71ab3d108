"""The marketer rules of #23 through the worker: Kafka in, Redis state, PostgreSQL out, and
the stored reason naming the values that made each rule fire."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from decisions.core.settings import Settings
from decisions.runtime.kafka import ensure_topics
from tests.helpers import event, minutes, now, running_worker, wait_for
from tests.test_worker_rules import decided
from tests.test_worker_support import fast, offer_ruleset, produce, publish


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
