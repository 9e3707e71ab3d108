"""Recommendations from the stream: co-visitation first, then category and overall top
sellers; bought, in-cart and out-of-stock products left out."""

from __future__ import annotations

from typing import Any

import orjson
import redis
from sqlalchemy import Engine, text

from decisions.kafka import ensure_topics
from decisions.settings import Settings
from tests.helpers import event, minutes, now, running_worker, wait_for
from tests.test_worker_support import fast, produce, publish

RECS = {
    "name": "recs", "description": "test", "stacking": True,
    "rules": [{
        "name": "after-two-views", "priority": 1,
        "when": {"all": [{"field": "event.type", "op": "eq", "value": "product_view"},
                         {"field": "state.session_product_views", "op": "gte", "value": 2}]},
        "then": [{"recommend": {"strategy": "covisit", "slot": "pp", "count": 3}}],
    }],
}


def test_covisitation_with_fallbacks_and_exclusions(
        settings: Settings, clean_db: Engine, redis_client: redis.Redis) -> None:
    settings = fast(settings)
    publish(settings, RECS)
    with clean_db.begin() as conn:
        conn.execute(text(
            "INSERT INTO products (product_id, name, price, in_stock, updated_at) VALUES "
            + ", ".join(f"('p-{i}', 'P{i}', 10, {'false' if i == 9 else 'true'}, now())"
                        for i in range(1, 10))))
    ensure_topics(settings)
    t = now() - minutes(30)

    def views(user: str, *products: int, start: int = 0) -> list[dict[str, Any]]:
        return [event("product_view", user, t + minutes(start + i), product_id=f"p-{p}")
                for i, p in enumerate(products)]

    def bought(user: str, product: int) -> dict[str, Any]:
        return event("purchase", user, t, order_id=f"o-{user}", total=10.0,
                     items=[{"product_id": f"p-{product}", "price": 10.0, "quantity": 1}])

    history = [
        *views("h1", 1, 2), *views("h2", 1, 2), *views("h3", 1, 3), *views("h4", 1, 9),
        *views("h5", 1, 4), bought("h6", 7), bought("buyer", 3),
    ]
    with running_worker(settings) as worker:
        produce(settings, history)
        wait_for(lambda: worker.stats.processed == len(history))
        produce(settings, [*views("buyer", 1, 5, start=10), *views("fresh", 8, 6, start=10)])
        wait_for(lambda: worker.stats.processed == len(history) + 4)

    def recommendation(user: str) -> dict[str, Any]:
        raw = redis_client.hget(f"d:recs:{{{user}}}", "pp")
        assert raw is not None, user
        return orjson.loads(raw)

    buyer = recommendation("buyer")
    # co-visited with p-1: p-2 (twice), p-3 (bought), p-9 (out of stock), p-4; then the
    # top seller p-7 fills the third place
    assert buyer["products"] == ["p-2", "p-4", "p-7"]
    assert buyer["strategy"] == "covisit"
    assert buyer["rule"] == "after-two-views" and buyer["ruleset_version"] == 1
    fresh = recommendation("fresh")  # nothing co-visited with p-8, p-6: top sellers
    assert fresh["strategy"] == "top_sellers"
    assert sorted(fresh["products"]) == ["p-3", "p-7"]
    # and from the stream: the history's pairs are counted both ways
    assert redis_client.zscore("d:covis:p-1", "p-2") == 2
    assert redis_client.zscore("d:covis:p-2", "p-1") == 2
