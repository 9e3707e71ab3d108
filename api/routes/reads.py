"""GET offers and recommendations: personalized when possible, generic fallback otherwise.

These paths never answer 5xx because a dependency failed: Redis down or slow, PostgreSQL
never reached, an API key that cannot be verified — each gives 200 with
``"personalized": false`` and a ``reason``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import Unverifiable, authenticate
from api.errors import BadRequest, FieldError, Unavailable
from api.ratelimit import Verdict
from api.responses import json_response
from api.state import ApiState, get_api
from decisions.errors import RateLimited
from decisions.events import parse_ts
from decisions.offers import public_offer, select_offers

MAX_LIMIT = 50
DEFAULT_LIMIT = 10
DEFAULT_SLOT = "default"
MAX_USER_ID = 200


def user_id_of(request: Request) -> str:
    user_id: str = request.path_params["user_id"]
    if not user_id.strip() or len(user_id) > MAX_USER_ID:
        raise BadRequest("invalid user id", [FieldError(
            "user_id", f"expected 1 to {MAX_USER_ID} characters")])
    return user_id


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise BadRequest("invalid query", [FieldError(
            "limit", f"expected an integer from 1 to {MAX_LIMIT}, got {raw!r}")])
    return value


def _slot(request: Request) -> str:
    slot = request.query_params.get("slot", DEFAULT_SLOT)
    if not slot or len(slot) > 100:
        raise BadRequest("invalid query", [FieldError("slot", "expected 1 to 100 characters")])
    return slot


def _check_rate(api: ApiState, verdict: Verdict) -> None:
    if not verdict.allowed:
        api.metrics.rate_limited.inc()
        raise RateLimited("rate limit exceeded for this API key", verdict.retry_after)


def _consent_withdrawn(api: ApiState, user_id: str, customer: bytes | None) -> bool:
    if user_id in api.snapshot.no_consent:
        return True
    if customer:
        try:
            data = orjson.loads(customer)
        except orjson.JSONDecodeError:
            return False
        if isinstance(data, dict) and data.get("consent") in (False, "false", 0):
            return True
    return False


def _respond(api: ApiState, request: Request, body: dict[str, Any]) -> Response:
    if not body["personalized"]:
        route = getattr(request.scope.get("route"), "path", request.url.path)
        api.metrics.fallbacks.labels(route, body["reason"]).inc()
    settings = api.settings
    return json_response(request, body, max_age=settings.api_cache_max_age,
                         gzip_min=settings.api_gzip_min_bytes)


async def get_offers(request: Request) -> Response:
    api = get_api(request)
    user_id = user_id_of(request)

    def fallback(reason: str) -> Response:
        body = {"user_id": user_id, "personalized": False, "reason": reason,
                "offers": list(api.fallback.offers)}
        return _respond(api, request, body)

    try:
        key = await authenticate(api, request, "offers:read")
    except Unverifiable:
        return fallback("auth_unavailable")
    try:
        view = await api.call_redis(api.redis.offers_view(key.prefix, user_id))
    except Unavailable:
        return fallback("redis_unavailable")
    _check_rate(api, view.verdict)
    if not api.snapshot.database_loaded:
        return fallback("database_unavailable")  # consent cannot be checked
    if _consent_withdrawn(api, user_id, view.customer):
        return fallback("consent_withdrawn")
    chosen = select_offers([orjson.loads(v) for v in view.offers], datetime.now(UTC))
    if not chosen:
        return fallback("no_offers")
    body = {"user_id": user_id, "personalized": True,
            "offers": [public_offer(o) for o in chosen]}
    return _respond(api, request, body)


def _live_recommendation(raw: bytes | None, now: datetime) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        rec = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("products"), list):
        return None
    expires = rec.get("expires_at")
    if isinstance(expires, str):
        try:
            if parse_ts(expires) <= now:
                return None
        except ValueError:
            return None
    return rec


async def get_recommendations(request: Request) -> Response:
    api = get_api(request)
    user_id = user_id_of(request)
    slot, limit = _slot(request), _limit(request)

    def fallback(reason: str, exclude: frozenset[str] = frozenset()) -> Response:
        products = api.fallback.fallback_products(api.snapshot, limit, exclude)
        body = {"user_id": user_id, "slot": slot, "personalized": False, "reason": reason,
                "strategy": "top_sellers", "products": products}
        return _respond(api, request, body)

    try:
        key = await authenticate(api, request, "offers:read")
    except Unverifiable:
        return fallback("auth_unavailable")
    try:
        view = await api.call_redis(api.redis.recs_view(key.prefix, user_id, slot))
    except Unavailable:
        return fallback("redis_unavailable")
    _check_rate(api, view.verdict)
    if not api.snapshot.database_loaded:
        return fallback("database_unavailable")
    if _consent_withdrawn(api, user_id, view.customer):
        return fallback("consent_withdrawn")
    bought = frozenset(b.decode() for b in view.bought)
    rec = _live_recommendation(view.recommendation, datetime.now(UTC))
    if rec is None:
        return fallback("no_recommendations", bought)
    products = api.snapshot.join([str(p) for p in rec["products"]], limit, bought)
    if not products:
        return fallback("no_recommendations", bought)
    body = {"user_id": user_id, "slot": slot, "personalized": True,
            "strategy": rec.get("strategy"), "rule": rec.get("rule"),
            "ruleset": rec.get("ruleset"), "ruleset_version": rec.get("ruleset_version"),
            "products": products}
    return _respond(api, request, body)


routes = [
    Route("/v1/users/{user_id}/offers", get_offers, methods=["GET"]),
    Route("/v1/users/{user_id}/recommendations", get_recommendations, methods=["GET"]),
]
