"""Recommendations from the stream: co-visitation first, then category and overall top
sellers; bought, in-cart and out-of-stock products left out."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
import redis
from sqlalchemy import Engine, text

from decisions.core.settings import Settings
from decisions.runtime.kafka import ensure_topics
from decisions.runtime.offers import action_id
from decisions.runtime.worker import Worker
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


def test_only_the_last_recommendation_per_user_and_slot_of_a_batch_is_produced(
        settings: Settings, clean_db: Engine, redis_client: redis.Redis) -> None:
    """Two views of one user in a batch fire the rule twice for the same slot: one
    recommendation is computed, stored and published (the later event's), two decisions
    are logged (the earlier one superseded by it). A replay of the batch (killed before
    its events were marked done) supersedes the same one by the same id."""
    settings = fast(settings)
    publish(settings, RECS)
    ensure_topics(settings)
    t = now() - minutes(30)
    views = [event("product_view", "u1", t + minutes(i), product_id=f"p-{i}") for i in range(3)]
    records = [SimpleNamespace(topic=settings.events_topic, partition=0, offset=i, key=b"u1",
                               value=orjson.dumps(e)) for i, e in enumerate(views)]
    survivor = action_id(views[2]["event_id"], "recs", "after-two-views", "recommendation")
    superseded = action_id(views[1]["event_id"], "recs", "after-two-views", "recommendation")

    def run_batch(batch: list[Any] = records) -> list[dict[str, Any]]:
        worker = Worker(settings)
        worker.start()
        assert worker._producer is not None
        published: list[dict[str, Any]] = []
        send = worker._producer.send

        def spy(topic: str, key: str | None, value: Any, headers: Any = None) -> Any:
            if topic == settings.actions_topic:
                published.append(value)
            return send(topic, key, value, headers)

        worker._producer.send = spy  # type: ignore[method-assign]
        worker.state.mark_done = lambda events: None  # type: ignore[method-assign]
        try:
            worker.process(batch)  # a small batch: decided at once
            worker.settle()
        finally:
            worker.close()
        return published

    first = run_batch()
    assert [m["action_id"] for m in first] == [survivor]
    assert first[0]["event_id"] == views[2]["event_id"] and "products" in first[0]["payload"]
    raw = redis_client.hget("d:recs:{u1}", "pp")
    assert raw is not None and orjson.loads(raw)["event_id"] == views[2]["event_id"]

    def rows() -> dict[str, dict[str, Any]]:
        with clean_db.connect() as conn:
            return {r.action_id: r.payload for r in conn.execute(text(
                "SELECT action_id, payload FROM decisions WHERE user_id = 'u1'"))}

    logged = rows()
    assert set(logged) == {survivor, superseded}
    assert logged[superseded]["superseded_by"] == survivor
    assert "products" not in logged[superseded]
    assert "superseded_by" not in logged[survivor]
    # the replay decides the events again from their kept snapshots: same survivor
    assert [m["action_id"] for m in run_batch()] == [survivor]
    assert rows() == logged
    # a replay cut elsewhere (the third view in a later poll) produces the second view's:
    # its row then says produced
    assert [m["action_id"] for m in run_batch(records[:2])] == [superseded]
    assert "superseded_by" not in rows()[superseded] and "products" in rows()[superseded]
