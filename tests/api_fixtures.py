"""Fixtures and helpers for the storefront API tests (real PostgreSQL, Redis and broker)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import redis
from sqlalchemy import Engine
from starlette.testclient import TestClient

from api.app import create_app
from decisions import apikeys, catalog, keys
from decisions.offers import OfferStore
from decisions.settings import Settings
from decisions.stack.process import free_port

DEAD_REDIS = "redis://127.0.0.1:{port}/0"
DEAD_POSTGRES = "postgresql://postgres@127.0.0.1:{port}/postgres"


def dead_port() -> int:
    """A port nothing listens on (bound once, then released)."""
    return free_port()


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    return replace(settings, rate_limit_per_second=1000.0, rate_limit_burst=1000,
                   catalog_refresh_seconds=60.0)


@pytest.fixture
def demo_catalog(clean_db: Engine) -> list[catalog.CatalogProduct]:
    products = catalog.read_file(catalog.DEMO_CATALOG)
    catalog.upsert(clean_db, products)
    return products


KeyMaker = Callable[..., str]


@pytest.fixture
def make_key(clean_db: Engine) -> KeyMaker:
    def make(*scopes: str, name: str = "test storefront") -> str:
        key, _ = apikeys.create_key(clean_db, name, scopes or ("offers:read", "events:write"))
        return key

    return make


@pytest.fixture
def client(api_settings: Settings, demo_catalog: Any) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings)) as test_client:
        yield test_client


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def offer(user_id: str, rule: str, *, priority: int = 0, stackable: bool = True,
          ttl: float = 3600, offer_id: str | None = None, value: float = 10) -> dict[str, Any]:
    now = datetime.now(UTC)
    expires = now + timedelta(seconds=ttl)
    return {
        "offer_id": offer_id or f"o-{user_id}-{rule}",
        "rule": rule, "ruleset": "promo", "ruleset_version": 3, "kind": "discount",
        "discount": {"type": "percent", "value": value, "code": "SAVE10"},
        "priority": priority, "stackable": stackable,
        "expires_at": expires.isoformat().replace("+00:00", "Z"),
        "expires_ms": int(expires.timestamp() * 1000),
        "created_at": now.isoformat().replace("+00:00", "Z"),
        "reason": {"cart_value": 150}, "event_id": f"e-{rule}",
    }


def store_offer(client: redis.Redis, user_id: str, data: dict[str, Any]) -> None:
    store = OfferStore(client)
    store.store_offer(client, user_id, data, int(time.time() * 1000), 3600)


def store_recs(client: redis.Redis, user_id: str, products: list[str], *, slot: str = "default",
               ttl: float = 3600) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=ttl)
    rec = {"products": products, "rule": "viewed-shoes", "ruleset": "promo",
           "ruleset_version": 3, "strategy": "covisit",
           "expires_at": expires.isoformat().replace("+00:00", "Z")}
    client.hset(keys.recs(user_id), slot, orjson.dumps(rec))
