"""Helpers for the storefront API tests (imported by the test modules)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import redis

from decisions.cli.stack.process import free_port
from decisions.core import keys
from decisions.runtime.offers import OfferStore

KeyMaker = Callable[..., str]


def dead_port() -> int:
    """A port nothing listens on (bound once, then released)."""
    return free_port()


def store_top_sellers(client: redis.Redis, units: dict[str, float]) -> None:
    """Top sellers as the worker writes them: each product in its shard."""
    for product, score in units.items():
        client.zadd(keys.top_seller(product), {product: score})


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
        "reason": f"rule {rule}: cart_value=150", "event_id": f"e-{rule}",
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
