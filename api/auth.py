"""``Authorization: Bearer dk_…`` → the key's scopes, or 401/403 as JSON.

Keys are verified against PostgreSQL once and then trusted in-process for
``DECISIONS_APIKEY_CACHE_SECONDS``. When PostgreSQL cannot be asked, a key verified
earlier stays trusted; a key never seen before is *unverifiable*: read paths then serve
the generic fallback content (which is public anyway), write paths answer 503.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from api.state import ApiState
from decisions.core.errors import Forbidden, ServiceUnavailable, Unauthorized
from decisions.runtime import apikeys
from decisions.runtime.apikeys import KeyInfo


class Unverifiable(ServiceUnavailable):
    """The key is well-formed but PostgreSQL cannot tell whether it is valid."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("PostgreSQL", reason="cannot verify the API key",
                         retry_after=retry_after)


def bearer_key(header: str) -> str:
    scheme, _, key = header.partition(" ")
    if not header:
        raise Unauthorized("missing API key: send Authorization: Bearer <key>")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("expected Authorization: Bearer <key>")
    return key.strip()


async def authenticate(api: ApiState, request: Request, scope: str) -> KeyInfo:
    """The verified key allowed ``scope``; raises Unauthorized, Forbidden or Unverifiable."""
    return await authenticate_header(api, request.headers.get("authorization", ""), scope)


def cached_key(api: ApiState, authorization: str, scope: str) -> KeyInfo | None:
    """The key from the in-process cache when it is fresh and allowed ``scope`` (no await);
    None when PostgreSQL must be asked (:func:`authenticate_header`)."""
    fresh, info = api.keys.get(bearer_key(authorization))
    if not fresh:
        return None
    return _allowed(info, scope)


async def authenticate_header(api: ApiState, authorization: str, scope: str) -> KeyInfo:
    key = bearer_key(authorization)
    fresh, info = api.keys.get(key)
    if not fresh:
        if apikeys.split_key(key) is None:
            raise Unauthorized("malformed API key")
        lookup = api.verifying.get(key)
        if lookup is None:
            # one lookup per key at a time: when a busy key's cache entry expires, the
            # requests in flight share one PostgreSQL query instead of one each
            lookup = api.verifying[key] = asyncio.ensure_future(_lookup(api, key))
            lookup.add_done_callback(lambda done: _looked_up(api, key, done))
        info = await asyncio.shield(lookup)
    return _allowed(info, scope)


async def _lookup(api: ApiState, key: str) -> KeyInfo | None:
    """The key's record from PostgreSQL, cached (a bad key too: Unauthorized)."""
    try:
        info = await api.db(apikeys.lookup, api.engine, key)
    except Unauthorized:
        api.keys.put(key, None)
        raise
    except ServiceUnavailable:
        if not api.keys.known(key):
            raise Unverifiable(api.db_breaker.retry_after()) from None
        return api.keys.get(key)[1]  # a stale entry: trust what PostgreSQL said last time
    api.keys.put(key, info)
    return info


def _looked_up(api: ApiState, key: str, lookup: asyncio.Future[KeyInfo | None]) -> None:
    if api.verifying.get(key) is lookup:
        del api.verifying[key]
    if not lookup.cancelled():
        lookup.exception()  # seen, even if every request waiting for it went away


def _allowed(info: KeyInfo | None, scope: str) -> KeyInfo:
    if info is None:
        raise Unauthorized("unknown or revoked API key")
    if not info.allows(scope):
        raise Forbidden(f"this API key lacks the {scope!r} scope")
    return info
