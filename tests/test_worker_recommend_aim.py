"""Recommendations a rule aims (#23): a product list, a named or the event's category, a
price relative to the event's product; the strategy that answered stored and served; one
slot per decision written by the highest-priority rule."""

from __future__ import annotations

from typing import Any

import orjson
import redis
from sqlalchemy import Engine, text
from starlette.testclient import TestClient

from api.app import create_app
from decisions.core import keys
from decisions.core.settings import Settings
from decisions.runtime.kafka import ensure_topics
from tests.api_helpers import KeyMaker, auth
from tests.helpers import event, minutes, now, put_catalog, running_worker, wait_for
from tests.test_worker_support import fast, produce, publish

pytest_plugins = ["tests.api_fixtures"]

CATALOG = [  # id, price, category
    ("gc-25", 25, "gift-cards"), ("gc-50", 50, "gift-cards"), ("gc-100", 100, "gift-cards"),
    ("w-1", 349, "watches"), ("w-2", 429, "watches"), ("b-1", 180, "bags"),
    ("j-1", 299, "jackets"), ("j-2", 349, "jackets"), ("j-3", 249, "jackets"),
    ("j-4", 199, "jackets"), ("j-5", 89, "jackets"),
    ("s-1", 40, "socks"),
]


def _rule(name: str, priority: int, when: list[dict[str, Any]], **recommend: Any
          ) -> dict[str, Any]:
    return {"name": name, "priority": priority, "when": {"all": when},
            "then": [{"recommend": recommend}]}


def _type(t: str) -> dict[str, Any]:
    return {"field": "event.type", "op": "eq", "value": t}


RULES = {"name": "aimed", "stacking": True, "rules": [
    _rule("gift-search", 5, [_type("search"),
                             {"field": "event.query", "op": "contains", "value": "gift"}],
          strategy="product_list", products=["gc-25", "gc-50", "gc-100"], slot="search",
          count=3),
    _rule("removed-expensive", 5, [_type("remove_from_cart"),
                                   {"field": "event.price", "op": "gt", "value": 100}],
          strategy="similar", price="cheaper", slot="cart", count=3),
    # two rules for one slot in one decision: the higher priority keeps it
    _rule("category-top", 9, [_type("product_view")], strategy="category_top",
          category="this_category", slot="pp", count=3),
    _rule("store-top", 1, [_type("product_view")], strategy="top_sellers", slot="pp",
          count=3),
]}


def test_aimed_recommendations(settings: Settings, clean_db: Engine, redis_client: redis.Redis,
                               api_settings: Settings, make_key: KeyMaker) -> None:
    settings = fast(settings)
    put_catalog(clean_db, CATALOG)
    publish(settings, RULES)
    ensure_topics(settings)
    t = now() - minutes(60)

    def buy(user: str, product: str, category: str, qty: int) -> dict[str, Any]:
        return event("purchase", user, t, order_id=f"o-{user}-{product}", total=10.0,
                     items=[{"product_id": product, "price": 10.0, "quantity": qty,
                             "category": category}])

    produce(settings, [
        # sales: watches and bags sell best overall; jackets j-2 (349) best in jackets
        buy("h1", "w-1", "watches", 9), buy("h2", "w-2", "watches", 8),
        buy("h3", "b-1", "bags", 7), buy("h4", "j-2", "jackets", 5),
        buy("h5", "j-4", "jackets", 2), buy("gifter", "gc-50", "gift-cards", 1),
    ])
    with running_worker(settings) as worker:
        wait_for(lambda: worker.stats.processed == 6)
        produce(settings, [
            event("search", "gifter", t + minutes(5), "g-1", query="gift for dad"),
            event("add_to_cart", "shopper", t + minutes(5), "s-1", product_id="j-1",
                  price=299.0, quantity=1, category="jackets"),
            event("remove_from_cart", "shopper", t + minutes(6), "s-2", product_id="j-1",
                  price=299.0, quantity=1, category="jackets"),
            # socks: no sales in the category, so category_top falls back (and says so)
            event("product_view", "browser", t + minutes(7), "b-1", product_id="s-1",
                  category="socks"),
            event("product_view", "jacketfan", t + minutes(7), "jf-1", product_id="j-5",
                  category="jackets"),
        ])
        wait_for(lambda: worker.stats.processed == 11)

    def rec(user: str, slot: str) -> dict[str, Any]:
        raw = redis_client.hget(keys.recs(user), slot)
        assert raw is not None, (user, slot)
        return dict(orjson.loads(raw))

    gifts = rec("gifter", "search")
    assert gifts["products"] == ["gc-25", "gc-100"]  # gc-50 was bought: left out
    assert (gifts["strategy"], gifts["fallback"]) == ("product_list", False)
    cheaper = rec("shopper", "cart")
    # cheaper than the removed $299 jacket, jackets first (the category's best seller
    # j-2 is $349: out), never the removed one itself
    assert cheaper["products"] == ["j-4", "j-3", "j-5"]
    assert cheaper["strategy"] == "similar" and cheaper["price"] == "cheaper"
    socks = rec("browser", "pp")
    assert socks["rule"] == "category-top"  # priority 9 over store-top's 1
    assert (socks["requested_strategy"], socks["strategy"], socks["fallback"]) == (
        "category_top", "top_sellers", True)
    assert socks["products"] == ["w-1", "w-2", "b-1"]
    jackets = rec("jacketfan", "pp")
    assert jackets["rule"] == "category-top" and jackets["fallback"] is False
    assert jackets["products"][:2] == ["j-2", "j-4"]
    # the API says which strategy answered
    with TestClient(create_app(api_settings)) as client:  # reads this test's catalog
        body = client.get("/v1/users/browser/recommendations?slot=pp",
                          headers=auth(make_key())).json()
    assert body["personalized"] is True
    assert (body["requested_strategy"], body["strategy"], body["fallback"]) == (
        "category_top", "top_sellers", True)
    with clean_db.connect() as conn:
        rows = list(conn.execute(text(
            "SELECT rule, payload FROM decisions WHERE user_id = 'browser' ORDER BY rule")))
    assert [(r.rule, r.payload.get("superseded_by") is not None) for r in rows] == [
        ("category-top", False), ("store-top", True)]
