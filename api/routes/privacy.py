"""GDPR/CCPA: DELETE /v1/users/{user_id} erases, GET /v1/users/{user_id}/export exports.

Erasure removes the user's PostgreSQL rows (customers, offer_feedback, decisions, the
event archive) first, then every Redis key of the user (``keys.user_pattern``, SCAN) and
the user's ``d:deadlines`` members. It is idempotent: repeating it after a failure
finishes the job. Both need the ``admin`` scope and both dependencies (503 otherwise).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, delete, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import authenticate
from api.responses import json_response
from api.routes.reads import user_id_of
from api.state import get_api
from decisions.core.models import ArchivedEvent, Customer, Decision, OfferFeedback

TABLES: tuple[tuple[str, Any], ...] = (
    ("customers", Customer),
    ("offer_feedback", OfferFeedback),
    ("decisions", Decision),
    ("events", ArchivedEvent),
)


def erase_rows(engine: Engine, user_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    with engine.begin() as conn:
        for name, model in TABLES:
            result = conn.execute(delete(model).where(model.user_id == user_id))
            counts[name] = int(result.rowcount or 0)
    return counts


def export_rows(engine: Engine, user_id: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        for name, model in TABLES:
            rows = conn.execute(select(model.__table__).where(model.user_id == user_id))
            out[name] = [dict(row._mapping) for row in rows]
    return out


async def delete_user(request: Request) -> Response:
    api = get_api(request)
    user_id = user_id_of(request)
    await authenticate(api, request, "admin")
    rows = await api.db(erase_rows, api.engine, user_id)
    redis_counts = await api.call_redis(api.redis.erase_user(user_id))
    return json_response(request, {"user_id": user_id, "erased": {**rows, **redis_counts}})


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
