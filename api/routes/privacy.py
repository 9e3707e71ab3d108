"""GDPR/CCPA: DELETE /v1/users/{user_id} erases, GET /v1/users/{user_id}/export exports.

Erasure first writes the user's tombstone in Redis (``d:erased:{uid}``: from then on the
worker drops the user's events from before the erasure, in flight or replayed), then
erases the PostgreSQL rows (``decisions.runtime.erasure``: tombstone row, a withdrawn
consent kept), then every Redis key of the user (``keys.claimants``) and the user's
deadline members (``keys.deadlines``). It is idempotent: repeating it after a failure
finishes the job.
Both need the ``admin`` scope and both dependencies (503 otherwise).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import authenticate
from api.responses import json_response
from api.routes.reads import user_id_of
from api.state import get_api
from decisions.core.events import format_ts
from decisions.runtime.erasure import erase_rows, export_rows


async def delete_user(request: Request) -> Response:
    api = get_api(request)
    user_id = user_id_of(request)
    await authenticate(api, request, "admin")
    erased_at = datetime.now(UTC)
    days = api.settings.erasure_tombstone_days
    await api.call_redis(api.redis.tombstone(user_id, erased_at, days * 86400))
    rows, withdrawn = await api.db(erase_rows, api.engine, user_id, erased_at, days)
    redis_counts = await api.call_redis(api.redis.erase_user(user_id))
    return json_response(request, {
        "user_id": user_id, "erased": {**rows, **redis_counts},
        "kept": {"consent_withdrawn": withdrawn},
        "tombstone": {"erased_at": format_ts(erased_at),
                      "expires_at": format_ts(erased_at + timedelta(days=days))},
    })


async def export_user(request: Request) -> Response:
    api = get_api(request)
    user_id = user_id_of(request)
    await authenticate(api, request, "admin")
    rows = await api.db(export_rows, api.engine, user_id)
    redis_data = await api.call_redis(api.redis.export_user(user_id))
    body = {"user_id": user_id, "postgres": rows, "redis": redis_data}
    return json_response(request, body, gzip_min=api.settings.api_gzip_min_bytes)


routes = [
    Route("/v1/users/{user_id}", delete_user, methods=["DELETE"]),
    Route("/v1/users/{user_id}/export", export_user, methods=["GET"]),
]
