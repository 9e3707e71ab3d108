"""Sign-in (throttled), sign-out."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from admin import csrf
from admin.services import services
from admin.templating import flash, redirect, url
from admin.users import verify
from admin.views.common import SESSION_STARTED, SESSION_USER, Form, field, page
from admin.views.render import render


def _safe_next(request: Request, target: str) -> str:
    root = request.scope.get("root_path", "").rstrip("/")
    if target.startswith(root + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return url(request, "rulesets")


@page(role=None)
def login(request: Request, form: Form) -> Response:
    svc = services(request)
    next_url = request.query_params.get("next", "")
    if request.method == "GET":
        if request.scope.get("admin_user"):
            return redirect(request, "rulesets")
        return render(request, "login.html", {"next": next_url, "username": "", "error": ""})
    username = field(form, "username")
    password = form.get("password")
    password = password if isinstance(password, str) else ""
    next_url = field(form, "next")
    address = request.client.host if request.client else "unknown"
    wait = svc.throttle.locked_for(username, address)
    if wait:
        minutes = max(1, round(wait / 60))
        return render(request, "login.html", {
            "next": next_url, "username": username,
            "error": f"Too many failed sign-ins. Try again in about {minutes} minute"
                     f"{'s' if minutes != 1 else ''}."}, status=429)
    user = verify(svc.db, username, password) if username and password else None
    if user is None:
        svc.throttle.failed(username, address)
        return render(request, "login.html", {
            "next": next_url, "username": username,
            "error": "Wrong user name or password."}, status=401)
    svc.throttle.succeeded(username)
    request.session.clear()  # a fresh session (and CSRF token) on every sign-in
    request.session[SESSION_USER] = user.id
    request.session[SESSION_STARTED] = time.time()
    csrf.rotate(request.session)
    flash(request, f"Signed in as {user.username} ({user.role}).")
    return RedirectResponse(_safe_next(request, next_url), status_code=303)


@page(role=None)
def logout(request: Request, form: Form) -> Response:
    request.session.clear()
    flash(request, "Signed out.")
    return redirect(request, "login")


routes = [
    Route("/login", login, methods=["GET", "POST"], name="login"),
    Route("/logout", logout, methods=["POST"], name="logout"),
]
