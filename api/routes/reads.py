"""GET offers and recommendations: personalized when possible, generic fallback otherwise.

These paths never answer 5xx because a dependency failed: Redis down or slow, PostgreSQL
never reached, an API key that cannot be verified — each gives 200 with
``"personalized": false`` and a ``reason``.

They are the hot path, so they are plain ASGI endpoints (:class:`ReadEndpoint`): no
Request or Response objects, headers read once from the scope. Errors are raised as
``DecisionsError`` and answered by the app's handlers like everywhere else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from api.auth import Unverifiable, authenticate_header, cached_key
from api.errors import BadRequest, FieldError
from api.ratelimit import Verdict
from api.responses import RawHeaders, encode_cacheable
from api.state import ApiState
from api.store import REDIS_ERRORS
from decisions.core.errors import RateLimited
from decisions.core.events import check_id, parse_ts
from decisions.runtime.apikeys import KeyInfo
from decisions.runtime.offers import select_offers

MAX_LIMIT = 50
DEFAULT_LIMIT = 10
DEFAULT_SLOT = "default"
NOTHING: frozenset[str] = frozenset()


class ReadRequest:
    """What a read needs from the ASGI scope."""

    __slots__ = ("headers", "query", "route_path", "user_id")

    def __init__(self, scope: Scope, user_id: str, route_path: str) -> None:
        self.headers = dict(scope["headers"])
        raw_query = scope.get("query_string", b"")
        self.query = dict(parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True)) \
            if raw_query else {}
        self.user_id = valid_user_id(user_id)
        self.route_path = route_path

    def header(self, name: bytes) -> str:
        return self.headers.get(name, b"").decode("latin-1")


Handler = Callable[[ApiState, ReadRequest], Awaitable[dict[str, Any]]]
Answer = tuple[int, RawHeaders, bytes]


class ReadEndpoint:
    """An ASGI endpoint answering the JSON body ``handler`` returns, cacheable.

    Routed like any endpoint, and also called directly by :class:`api.dispatch.ReadDispatch`
    (``answer``), which answers the hot GETs in front of the middleware stack.
    """

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, headers, payload = await self.answer(
            scope["app"].state.api, scope["path_params"]["user_id"], scope)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def answer(self, api: ApiState, user_id: str, scope: Scope) -> Answer:
        """Status, raw headers and body of the read; a DecisionsError is raised, not
        answered. Nothing is sent: the caller sends the answer."""
        request = ReadRequest(scope, user_id, self.path)
        body = await self.handler(api, request)
        if not body["personalized"]:
            api.metrics.fallbacks.labels(self.path, body["reason"]).inc()
        headers = request.headers
        return encode_cacheable(
            body, api.settings.api_cache_max_age, gzip_min=api.settings.api_gzip_min_bytes,
            if_none_match=headers.get(b"if-none-match"),
            accept_encoding=headers.get(b"accept-encoding"),
        )


def user_id_of(request: Request) -> str:
    return valid_user_id(request.path_params["user_id"])


def valid_user_id(user_id: str) -> str:
    """The contract's id rule (decisions.core.events.check_id), as for events."""
    problem = check_id(user_id)
    if problem is not None:
        raise BadRequest("invalid user id", [FieldError("user_id", problem)])
    return user_id


def _limit(request: ReadRequest) -> int:
    raw = request.query.get("limit")
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


def _slot(request: ReadRequest) -> str:
    slot = request.query.get("slot", DEFAULT_SLOT)
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
    if customer and b"consent" in customer:
        try:
            data = orjson.loads(customer)
        except orjson.JSONDecodeError:
            return False
        if isinstance(data, dict) and data.get("consent") in (False, "false", 0):
            return True
    return False


READ_SCOPE = "offers:read"


async def _verify(api: ApiState, authorization: str) -> KeyInfo | None:
    """A key not in the in-process cache, checked in PostgreSQL; None when it cannot be
    (the read then answers the fallback). A bad or missing key still raises 401/403."""
    try:
        return await authenticate_header(api, authorization, READ_SCOPE)
    except Unverifiable:
        return None


async def get_offers(api: ApiState, request: ReadRequest) -> dict[str, Any]:
    user_id = request.user_id

    def fallback(reason: str) -> dict[str, Any]:
        return {"user_id": user_id, "personalized": False, "reason": reason,
                "offers": list(api.fallback.offers)}

    authorization = request.header(b"authorization")
    key = cached_key(api, authorization, READ_SCOPE) or await _verify(api, authorization)
    if key is None:
        return fallback("auth_unavailable")
    breaker = api.redis_breaker  # api.call_redis, inlined: this is the hot path
    if not breaker.allow():
        return fallback("redis_unavailable")
    try:
        view = await api.redis.offers_view(key.prefix, user_id)
    except REDIS_ERRORS as exc:
        breaker.failure(exc)
        api.redis_fault(exc)  # a misconfiguration is logged (once)
        return fallback("redis_unavailable")
    breaker.success()
    _check_rate(api, view.verdict)
    if not api.snapshot.database_loaded:
        return fallback("database_unavailable")  # consent cannot be checked
    if _consent_withdrawn(api, user_id, view.customer):
        return fallback("consent_withdrawn")
    stored = view.offers
    # one parse for all: the stored offers are JSON objects, so joined they are an array
    parsed = orjson.loads(b"[" + b",".join(stored) + b"]") if stored else []
    chosen = select_offers(parsed, datetime.now(UTC))
    if not chosen:
        return fallback("no_offers")
    for stored_offer in chosen:  # parsed for this request alone: trimmed in place
        stored_offer.pop("expires_ms", None)  # what public_offer drops
    return {"user_id": user_id, "personalized": True, "offers": chosen}


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


async def get_recommendations(api: ApiState, request: ReadRequest) -> dict[str, Any]:
    user_id = request.user_id
    slot, limit = _slot(request), _limit(request)

    def fallback(reason: str, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
        products = api.fallback.fallback_products(api.snapshot, limit, exclude)
        return {"user_id": user_id, "slot": slot, "personalized": False, "reason": reason,
                "strategy": "top_sellers", "products": products}

    authorization = request.header(b"authorization")
    key = cached_key(api, authorization, READ_SCOPE) or await _verify(api, authorization)
    if key is None:
        return fallback("auth_unavailable")
    breaker = api.redis_breaker
    if not breaker.allow():
        return fallback("redis_unavailable")
    try:
        view = await api.redis.recs_view(key.prefix, user_id, slot)
    except REDIS_ERRORS as exc:
        breaker.failure(exc)
        api.redis_fault(exc)  # a misconfiguration is logged (once)
        return fallback("redis_unavailable")
    breaker.success()
    _check_rate(api, view.verdict)
    if not api.snapshot.database_loaded:
        return fallback("database_unavailable")
    if _consent_withdrawn(api, user_id, view.customer):
        return fallback("consent_withdrawn")
    bought = frozenset(b.decode() for b in view.bought) if view.bought else NOTHING
    rec = _live_recommendation(view.recommendation, datetime.now(UTC))
    if rec is None:
        return fallback("no_recommendations", bought)
    products = api.snapshot.join_json([str(p) for p in rec["products"]], limit, bought)
    if not products:
        return fallback("no_recommendations", bought)
    return {"user_id": user_id, "slot": slot, "personalized": True,
            "strategy": rec.get("strategy"), "rule": rec.get("rule"),
            "ruleset": rec.get("ruleset"), "ruleset_version": rec.get("ruleset_version"),
            "requested_strategy": rec.get("requested_strategy", rec.get("strategy")),
            "fallback": bool(rec.get("fallback", False)),
            "products": products}


OFFERS = ReadEndpoint("/v1/users/{user_id}/offers", get_offers)
RECOMMENDATIONS = ReadEndpoint("/v1/users/{user_id}/recommendations", get_recommendations)

routes = [
    Route(OFFERS.path, OFFERS, methods=["GET"]),
    Route(RECOMMENDATIONS.path, RECOMMENDATIONS, methods=["GET"]),
]
