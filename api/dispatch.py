"""The hot reads answered in front of the middleware stack: a pure ASGI app.

``GET /v1/users/{user_id}/offers`` and ``/recommendations`` are nearly all of the API's
traffic. :class:`ReadDispatch` sits in front of Starlette's whole middleware stack
(:class:`DecisionsApp` puts it there), recognises them with two string operations and
calls their endpoint (``api.routes.reads``) directly: no regex match against every
route, no send wrappers of the error, metrics and exception middlewares. It does for
these reads what those middlewares do for routed requests: times them into the same
latency histogram, answers a ``DecisionsError`` with the app's handler function, answers
any other exception with the app's 500 handler and raises it on to the server (as
Starlette's ``ServerErrorMiddleware`` does). So a dispatched read is indistinguishable
from a routed one. Anything else — other methods (HEAD included), paths, a ``root_path``
— goes down the ordinary stack, where the same endpoints are routed too. With CORS
configured, dispatched reads go through the same ``CORSMiddleware`` settings.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import Any

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response, internal_error
from api.metrics import Metrics
from api.routes.reads import OFFERS, RECOMMENDATIONS, ReadEndpoint
from decisions.core.errors import DecisionsError

PREFIX = "/v1/users/"
ENDPOINTS: dict[str, ReadEndpoint] = {"offers": OFFERS, "recommendations": RECOMMENDATIONS}


class DecisionsApp(Starlette):
    """Starlette, with ``front`` (a wrapper such as :class:`ReadDispatch`) in front of the
    middleware stack it builds."""

    def __init__(self, *args: Any, front: Callable[[ASGIApp], ASGIApp], **kwargs: Any) -> None:
        self.front = front
        super().__init__(*args, **kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        return self.front(super().build_middleware_stack())


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
                    else:
                        await self._serve(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint: ReadEndpoint = scope["endpoint"]
        start = perf_counter()
        status = 500
        try:
            status, headers, payload = await endpoint.answer(
                scope["app"].state.api, scope["path_params"]["user_id"], scope)
        except DecisionsError as exc:
            status = exc.status
            await error_response(exc)(scope, receive, send)
        except Exception as exc:
            await (await internal_error(Request(scope), exc))(scope, receive, send)
            raise
        else:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
        finally:
            self.observe(endpoint.path, "GET", status, perf_counter() - start)
