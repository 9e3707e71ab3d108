"""What every page shares: sign-in and role checks, CSRF on POST, error pages.

A view is a plain (blocking) function ``view(request, form) -> Response`` wrapped by
``@page(role)``: the wrapper reads the form, then runs the checks and the view in a
worker thread, so database work never blocks the event loop of the storefront API the
admin is mounted in.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import wraps
from urllib.parse import quote

import redis
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from admin import csrf
from admin.services import services
from admin.sessions import USER
from admin.templating import templates_of, url
from admin.users import User, get_user
from decisions.core.errors import DecisionsError, Forbidden

Form = FormData
View = Callable[[Request, Form], Response]
Endpoint = Callable[[Request], Awaitable[Response]]
SESSION_USER = USER  # the server-side session (admin.sessions) keys its user by it
SESSION_STARTED = "since"
MAX_FORM_FIELDS = 5000


def page(role: str | None = "viewer") -> Callable[[View], Endpoint]:
    """``role``: the least role allowed (None: no sign-in needed, e.g. the sign-in page)."""

    def decorate(view: View) -> Endpoint:
        @wraps(view)
        async def endpoint(request: Request) -> Response:
            form = FormData()
            if request.method == "POST":
                form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
            return await run_in_threadpool(_handle, view, role, request, form)

        return endpoint

    return decorate


def current_user(request: Request) -> User | None:
    svc = services(request)
    uid = request.session.get(SESSION_USER)
    started = request.session.get(SESSION_STARTED, 0)
    if not isinstance(uid, int):
        return None
    if not isinstance(started, int | float) or \
            time.time() - started > svc.settings.admin_session_seconds:
        request.session.clear()
        return None
    return get_user(svc.db, uid)


def _handle(view: View, role: str | None, request: Request, form: Form) -> Response:
    try:
        user = current_user(request)
        request.scope["admin_user"] = user
        if role is not None:
            if user is None:
                if request.method != "GET":
                    raise Forbidden("your session has ended: sign in again")
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(url(request, "login") + "?next=" + quote(target),
                                        status_code=303)
            if not user.can(role):
                raise Forbidden(f"this needs the {role} role; you are signed in as "
                                f"{user.username} ({user.role})")
        if request.method == "POST" and not csrf.valid(request.session, form, request.headers):
            raise Forbidden("the form expired or did not come from this site "
                            "(missing or wrong CSRF token): reload the page and try again")
        return view(request, form)
    except DecisionsError as exc:
        return error_page(request, exc.status, exc.message)
    except OperationalError:
        return error_page(request, 503, "PostgreSQL cannot be reached right now; nothing was "
                                        "changed. Try again in a moment.")
    except redis.RedisError:
        return error_page(request, 503, "Redis cannot be reached right now; nothing was "
                                        "changed. Try again in a moment.")


def error_page(request: Request, status: int, message: str) -> Response:
    titles = {403: "Not allowed", 404: "Not found", 409: "Changed meanwhile",
              422: "Not valid", 503: "Service unavailable"}
    return templates_of(request).TemplateResponse(
        request, "error.html",
        {"status": status, "title": titles.get(status, "Something went wrong"),
         "message": message},
        status_code=status,
    )


def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 in the admin layout (user looked up for the navigation)."""
    status = getattr(exc, "status_code", 500)
    if "admin_user" not in request.scope:
        try:
            request.scope["admin_user"] = current_user(request)
        except DecisionsError:
            request.scope["admin_user"] = None
    detail = getattr(exc, "detail", "") if isinstance(exc, HTTPException) else ""
    message = "There is no page at this address." if status == 404 else str(detail)
    return error_page(request, status, message)


def field(form: Form, name: str, default: str = "") -> str:
    value = form.get(name, default)
    return value.strip() if isinstance(value, str) else default


def server_error(request: Request, exc: Exception) -> Response:
    """An unexpected failure: the admin layout, no details (they go to the log)."""
    request.scope.setdefault("admin_user", None)
    return error_page(request, 500, "Something went wrong on our side; it has been logged. "
                                    "Try again, or tell the team running decisions.")
