"""The admin UI app factory: settings, routes, sessions, static files, error pages. Wiring only.

Mounted at /admin inside the storefront API by ``decisions up``; it also runs on its own
(tests serve it with uvicorn). Links are built from its own router plus the mount's
``root_path``, and its clients open lazily (``admin.services``): a mounted app's lifespan
never runs.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from admin.headers import SecurityHeaders
from admin.services import AdminServices
from admin.sessions import COOKIE, ServerSessions
from admin.templating import HERE, make_templates
from admin.views import (
    account,
    audit,
    backtests,
    editor,
    history,
    people,
    performance,
    rulesets,
    trial,
)
from admin.views.common import http_exception, server_error
from decisions.core.settings import Settings

__all__ = ["COOKIE", "create_app"]


def create_app(settings: Settings) -> Starlette:
    routes = [
        *account.routes, *editor.routes, *rulesets.routes, *trial.routes, *backtests.routes,
        *history.routes, *audit.routes, *performance.routes, *people.routes,
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(SecurityHeaders),
                  Middleware(ServerSessions, lifetime_seconds=settings.admin_session_seconds)]
    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers={HTTPException: http_exception,
                                        Exception: server_error})
    app.state.admin = AdminServices(settings)
    app.state.templates = make_templates()
    return app
