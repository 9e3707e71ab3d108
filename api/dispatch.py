"""The hot reads answered before Starlette's router: a pure ASGI middleware.

``GET /v1/users/{user_id}/offers`` and ``/recommendations`` are nearly all of the API's
traffic. This middleware, the first inside Starlette's error middleware, recognises them
with two string operations and calls their endpoint (``api.routes.reads``) directly: no
regex match against every route, no send wrappers of the metrics and exception
middlewares. It times them into the same latency histogram, and answers a
``DecisionsError`` with the same function as the app's exception handler, so a
dispatched read is indistinguishable from a routed one. Anything else — other methods
(HEAD included), paths, a ``root_path`` — goes down the ordinary stack, where the same
endpoints are routed too. With CORS configured, dispatched reads go through the same
``CORSMiddleware`` settings.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response
from api.metrics import Metrics
from api.routes.reads import OFFERS, RECOMMENDATIONS, ReadEndpoint
from decisions.errors import DecisionsError

PREFIX = "/v1/users/"
ENDPOINTS: dict[str, ReadEndpoint] = {"offers": OFFERS, "recommendations": RECOMMENDATIONS}


class ReadDispatch:
    def __init__(self, app: ASGIApp, metrics: Metrics,
                 cors: dict[str, Any] | None = None) -> None:
        self.app = app
        self.observe = metrics.observe
        self.cors = CORSMiddleware(self._serve, **cors) if cors else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            path: str = scope["path"]
            if path.startswith(PREFIX):
                # the route's {user_id} is one non-empty path segment, as Starlette matches it
                user_id, slash, rest = path[len(PREFIX):].partition("/")
                endpoint = ENDPOINTS.get(rest) if slash and user_id else None
                if endpoint is not None:
                    scope["endpoint"] = endpoint
                    scope["path_params"] = {"user_id": user_id}
                    if self.cors is not None:
                        await self.cors(scope, receive, send)
                        return
                    start = perf_counter()
                    status = 500
                    try:
                        status = await endpoint.respond(scope["app"].state.api, user_id, scope,
                                                        send)
                    except DecisionsError as exc:
                        status = exc.status
                        await error_response(exc)(scope, receive, send)
                    finally:
                        self.observe(endpoint.path, "GET", status, perf_counter() - start)
                    return
        await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The same as the inline answer of ``__call__``, as an app for CORSMiddleware."""
        endpoint: ReadEndpoint = scope["endpoint"]
        start = perf_counter()
        status = 500
        try:
            status = await endpoint.respond(scope["app"].state.api,
                                            scope["path_params"]["user_id"], scope, send)
        except DecisionsError as exc:
            status = exc.status
            await error_response(exc)(scope, receive, send)
        finally:
            self.observe(endpoint.path, "GET", status, perf_counter() - start)
