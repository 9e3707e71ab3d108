"""The ``next_click`` strategy: its ranking, its incremental updates in Redis, and a
shopper's recommendations following their clicks end to end (API, Kafka, worker)."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from decisions.core import keys
from decisions.core.events import parse_event
from decisions.core.resp.pipeline import RawPipeline, RawScript
from decisions.core.settings import Settings
from decisions.runtime import next_click
from decisions.runtime.kafka import ensure_topics
from decisions.runtime.recommend import (
    INCREMENT,
    STRATEGIES,
    PopularityBatch,
    Recommender,
    models_for,
)
from decisions.runtime.state import StateStore
from rulesets import validate
from tests.api_helpers import KeyMaker, auth
from tests.helpers import ROOT, event, import_starter, minutes, now, running_worker, wait_for
from tests.test_worker_support import fast, produce

pytest_plugins = ["tests.api_fixtures"]


def test_rank_mixes_rules_and_returns_as_documented() -> None:
    rules = {"d:sr:a": [("b", 3.0), ("c", 1.0)], "d:sr:x": [("c", 2.0)]}

    def ranked(key: str, n: int) -> list[tuple[str, float]]:
        assert n == next_click.READ - 1
        return rules.get(key, [])

    # session newest first: a (w 1), x (w 1/2), a (w 1/3); return share 0.25
    # rules: b = 1 * 3/4 + 1/3 * 3/4 = 1; c = 1 * 1/4 + 1/2 * 1 + 1/3 * 1/4 = 0.8333,
    # over the weights of the clicks with rules, 11/6; returns: a = 4/3, x = 1/2 over 11/6
    got = next_click.rank(["a", "x", "a"], 0.25, ranked, 10)
    scores = {"b": 0.75 * 1 / (11 / 6), "c": 0.75 * (0.25 + 0.5 + 1 / 12) / (11 / 6),
              "a": 0.25 * (4 / 3) / (11 / 6), "x": 0.25 * 0.5 / (11 / 6)}
    assert got == sorted(scores, key=scores.__getitem__, reverse=True) == ["b", "c", "a", "x"]
    assert next_click.rank([], 0.25, ranked, 10) == []
    assert next_click.rank(["new"], 0.25, ranked, 10) == ["new"]  # no rules: the return


def test_the_rule_language_knows_every_strategy() -> None:
    assert set(validate.STRATEGIES) == set(STRATEGIES)


def test_models_learned_are_those_the_strategies_read() -> None:
    assert models_for(["next_click"]) == {"next_click", "top_viewed"}
    assert models_for(["covisit", "top_sellers"]) == {"covisit"}
    assert models_for(["recently_viewed", "unknown"]) == set()


def _apply(client: redis.Redis, store: StateStore, *events: dict[str, Any]) -> list[Any]:
    """What the worker does with a batch: the state script, then the model updates."""
    applied = store.apply_batch([parse_event(e) for e in events])
    batch = PopularityBatch()
    for item in applied:
        if not item.duplicate:
            batch.add(item.event, item.snapshot)
    pipe = RawPipeline(client)
    batch.queue(pipe, RawScript(INCREMENT))
    pipe.execute()
    return [item.snapshot for item in applied]


def returns(client: redis.Redis) -> dict[str, int]:
    """The returns counters, summed over their shards."""
    total: dict[str, int] = {}
    for key in keys.RETURNS_KEYS:
        for field, value in client.hgetall(key).items():
            total[field.decode()] = total.get(field.decode(), 0) + int(value)
    return total


def test_incremental_updates_per_click(redis_client: redis.Redis) -> None:
    store = StateStore(redis_client)
    t = now() - minutes(120)

    def view(user: str, product: str, at: float, **extra: Any) -> dict[str, Any]:
        return event("product_view", user, t + minutes(at), product_id=product, **extra)

    first = view("u", "p-1", 0)
    snaps = _apply(redis_client, store, first, view("u", "p-2", 1))
    assert [s["session_products"] for s in snaps] == [["p-1"], ["p-2", "p-1"]]
    _apply(redis_client, store, view("u", "p-3", 2))  # another batch: the sums go on

    def rules(product: str) -> dict[str, float]:
        return {m.decode(): s for m, s in
                redis_client.zrange(keys.successors(product), 0, -1, withscores=True)}

    assert rules("p-1") == {"p-2": 1.0, "p-3": 0.5}  # 1 / distance
    assert rules("p-2") == {"p-3": 1.0}
    assert returns(redis_client) == {"next": 2}

    # back to p-1 (a return), a page view between (not a product click), the event twice
    back = view("u", "p-1", 3)
    snaps = _apply(redis_client, store, event("page_view", "u", t + minutes(2.5), page="home"),
                   back, back)
    assert snaps[1]["session_products"] == ["p-1", "p-3", "p-2", "p-1"]
    assert rules("p-3") == {"p-1": 1.0}
    assert rules("p-2") == {"p-3": 1.0, "p-1": 0.5}
    assert rules("p-1") == pytest.approx({"p-2": 1.0, "p-3": 0.5, "p-1": 1 / 3})
    assert returns(redis_client) == {"next": 3, "return": 1}
    _apply(redis_client, store, back)  # redelivered later: a duplicate, counted once
    assert returns(redis_client) == {"next": 3, "return": 1}

    # 31 minutes later: a new session, nothing chained to the old one
    snaps = _apply(redis_client, store, view("u", "p-9", 34))
    assert snaps[0]["session_products"] == ["p-9"]
    assert not redis_client.exists(keys.successors("p-1")) or "p-9" not in rules("p-1")
    assert returns(redis_client) == {"next": 3, "return": 1}
    assert redis_client.zscore(keys.viewed("p-1"), "p-1") == 2

    # the session list is bounded (10 clicks); a click counts for the 5 before it
    many = [view("v", f"q-{i}", i / 10) for i in range(15)]
    snaps = _apply(redis_client, store, *many)
    assert snaps[-1]["session_products"] == [f"q-{i}" for i in range(14, 4, -1)]
    assert rules("q-3") == {f"q-{i}": pytest.approx(1 / (i - 3)) for i in range(4, 9)}

    # what the Recommender makes of it: p-1's followers, then the return to p-1 itself
    recommender = Recommender(redis_client)
    snapshot = {"session_products": ["p-1"], "cart_products": []}
    recommender.prefetch([("w", snapshot, "next_click")])
    products, used = recommender.recommend("w", snapshot, "next_click", 3)
    assert used == "next_click"
    assert products == ["p-2", "p-1", "p-3"]  # share (1 + 1) / (3 + 2) = 0.4 for returns


def test_recommendations_follow_the_shopper_as_they_click(
        api_settings: Settings, client: TestClient, make_key: KeyMaker,
        redis_client: redis.Redis) -> None:
    settings = fast(api_settings)
    import_starter(settings, ROOT / "rulesets" / "starter" / "recommendations.yaml")
    ensure_topics(settings)
    key = make_key()
    t = now() - minutes(60)

    def views(user: str, *products: str, start: float = 0) -> list[dict[str, Any]]:
        return [event("product_view", user, t + minutes(start + i), product_id=p)
                for i, p in enumerate(products)]

    # what shoppers clicked after what: p-1 -> p-2 (three times), p-5 -> p-6 (twice)
    history = [*views("h1", "p-1", "p-2"), *views("h2", "p-1", "p-2", "p-3"),
               *views("h3", "p-1", "p-2"), *views("h4", "p-5", "p-6"),
               *views("h5", "p-5", "p-6")]

    def slot() -> dict[str, Any]:
        resp = client.get("/v1/users/shopper/recommendations?slot=product_page",
                          headers=auth(key))
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def products() -> list[str]:
        """The slot's products once personalized (the fallback lists top sellers)."""
        body = slot()
        return [p["id"] for p in body["products"]] if body["personalized"] else []

    def led_by(product: str) -> list[str] | None:
        got = products()
        return got if got and got[0] == product else None

    with running_worker(settings) as worker:
        produce(settings, history)
        wait_for(lambda: worker.stats.processed == len(history))
        assert slot()["personalized"] is False  # not a click yet
        wait_for(lambda: redis_client.exists(keys.successors("p-5")))
        # the active rules use next_click only: co-visitation is not counted
        assert redis_client.keys("d:covis:*") == []
        # the shopper, through the storefront API: two views fire the starter rule
        for e in views("shopper", "p-4", "p-1", start=30):
            assert client.post("/v1/events", json=e, headers=auth(key)).status_code == 202
        # p-1's follower first, then the shopper's own two products among the rest
        first = wait_for(lambda: led_by("p-2"))
        assert {"p-1", "p-4"} <= set(first)
        body = slot()
        assert body["personalized"] is True and body["strategy"] == "next_click"
        assert body["rule"] == "browse-based" and body["ruleset"] == "recommendations"
        # a click on p-5: now what follows p-5 leads, and the list changed
        e = views("shopper", "p-5", start=32)[0]
        assert client.post("/v1/events", json=e, headers=auth(key)).status_code == 202
        second = wait_for(lambda: led_by("p-6"))
        assert second != first and "p-5" in second
