"""The storefront API app factory: settings, routes, middleware, error handlers. Wiring only."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from api.dispatch import DecisionsApp, ReadDispatch
from api.errors import EXCEPTION_HANDLERS
from api.metrics import Metrics, MetricsMiddleware
from api.routes import customers, events, feedback, ops, privacy, reads
from api.state import ApiState
from decisions.core.settings import Settings


def create_app(settings: Settings, *, extra_routes: list[Any] | None = None,
               freeze_gc: bool = False) -> Starlette:
    """``extra_routes`` (e.g. the admin UI mounted at /admin) share the app and lifespan.

    ``freeze_gc``, for a process that serves this app alone: once started, everything
    alive (modules, clients, catalog) is moved out of the garbage collector's sight
    (``gc.freeze``), so its full collections no longer walk them — they took ~50 ms
    under load, every few seconds, stalling every request in flight.
    """
    if not settings.redis_url or not settings.database_url or not settings.kafka_bootstrap:
        from decisions.core.errors import ConfigError

        raise ConfigError("the API needs DECISIONS_DATABASE_URL, DECISIONS_REDIS_URL and "
                          "DECISIONS_KAFKA_BOOTSTRAP (or a running `decisions up`)")
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state = ApiState.open(settings, metrics)
        app.state.api = state
        await state.start()
        if freeze_gc:
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            await state.stop()

    cors: dict[str, Any] | None = None
    if settings.cors_origins:
        cors = {"allow_origins": list(settings.cors_origins),
                "allow_methods": ["GET", "POST", "PUT", "DELETE", "OPTIONS"],
                "allow_headers": ["Authorization", "Content-Type", "If-None-Match"],
                "expose_headers": ["ETag", "Retry-After"],
                "max_age": 600}
    middleware = [Middleware(MetricsMiddleware, metrics=metrics)]
    if cors:
        middleware.append(Middleware(CORSMiddleware, **cors))
    routes = [*reads.routes, *events.routes, *feedback.routes, *privacy.routes,
              *customers.routes, *ops.routes, *(extra_routes or [])]
    return DecisionsApp(routes=routes, middleware=middleware,
                        exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan,
                        front=lambda stack: ReadDispatch(stack, metrics, cors))
