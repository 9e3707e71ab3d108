"""Operations: /healthz (the process is up), /readyz (each dependency), /metrics, /openapi.json."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.openapi import document
from api.responses import JSONBody, json_response
from api.state import ApiState, get_api
from api.store import REDIS_ERRORS
from decisions.core.db import check_database
from decisions.core.errors import DecisionsError
from decisions.runtime.kafka import check_reachable

CHECK_TIMEOUT = 2.0


async def healthz(request: Request) -> Response:
    return json_response(request, {"status": "ok"})


async def _check(name: str, call: Any) -> tuple[str, dict[str, Any]]:
    start = time.perf_counter()
    try:
        note = await asyncio.wait_for(call, CHECK_TIMEOUT)
        result: dict[str, Any] = {"ok": True}
        if note:
            result["note"] = note
    except DecisionsError as exc:
        result = {"ok": False, "error": exc.message}
    except (TimeoutError, *REDIS_ERRORS) as exc:
        result = {"ok": False, "error": type(exc).__name__ + (f": {exc}" if str(exc) else "")}
    result["ms"] = round((time.perf_counter() - start) * 1000, 1)
    return name, result


def _kafka_ready(api: ApiState) -> str | None:
    """The broker accepts connections, and the API's producer can send: one found broken
    (e.g. fatal after a broker restart) is rebuilt here, so the API is ready again without
    waiting for a request; a rebuild that fails makes the check fail."""
    check_reachable(api.settings, timeout=1.0)
    producer = api.producer
    repaired = producer.recover() if producer is not None else None
    return f"producer was broken ({repaired}); rebuilt" if repaired else None


async def readyz(request: Request) -> Response:
    api: ApiState = get_api(request)
    settings = api.settings
    checks = dict(await asyncio.gather(
        _check("redis", api.redis.ping()),
        _check("postgres", anyio.to_thread.run_sync(
            check_database, api.engine, str(settings.database_url), abandon_on_cancel=True)),
        _check("kafka", anyio.to_thread.run_sync(
            lambda: _kafka_ready(api), abandon_on_cancel=True)),
    ))
    checks["catalog"] = {"ok": api.snapshot.database_loaded,
                         "products": len(api.snapshot.products)}
    for name, breaker in api.breakers.items():
        checks[name]["breaker"] = breaker.state
    failed = sorted(name for name, check in checks.items() if not check["ok"])
    body = {"status": "ready" if not failed else "unavailable", "failed": failed,
            "checks": checks}
    headers = {"Retry-After": "1"} if failed else None
    return json_response(request, body, status=200 if not failed else 503, headers=headers)


async def metrics(request: Request) -> Response:
    api = get_api(request)
    return Response(api.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8",
                    headers={"Cache-Control": "no-store"})


async def openapi(request: Request) -> Response:
    return JSONBody(document(get_api(request).settings), headers={"Cache-Control": "no-cache"})


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
