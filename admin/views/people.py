"""User administration (admin role): list users, add one, change a role, set a password,
remove one. Audited. A new password and a removal end the user's sessions everywhere."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin.services import services
from admin.templating import flash, redirect
from admin.users import create_user, list_users, remove_user, set_password, set_role
from admin.views.common import Form, field, page
from admin.views.render import render
from decisions.core.db import utcnow
from decisions.core.errors import Conflict, NotFound, ValidationError
from rulesets.models import AuditEntry


def _audit(request: Request, action: str, comment: str) -> None:
    from sqlalchemy.orm import Session

    with Session(services(request).db) as s:
        s.add(AuditEntry(actor=request.scope["admin_user"].username, action=action,
                         ruleset=None, version=None, comment=comment, at=utcnow()))
        s.commit()


@page("admin")
def users_page(request: Request, form: Form) -> Response:
    return render(request, "users.html", {"users": list_users(services(request).db),
                                          "errors": {}, "values": {"username": "",
                                                                   "role": "viewer"}})


@page("admin")
def add_user(request: Request, form: Form) -> Response:
    username, role = field(form, "username"), field(form, "role")
    password = form.get("password")
    try:
        user = create_user(services(request).db, username,
                           password if isinstance(password, str) else "", role,
                           actor=request.scope["admin_user"].username)
    except (ValidationError, Conflict) as exc:
        errors = {d.field: d.message for d in exc.details} or {"username": exc.message}
        return render(request, "users.html", {
            "users": list_users(services(request).db), "errors": errors,
            "values": {"username": username, "role": role}}, status=422)
    flash(request, f"User {user.username} created ({user.role}).")
    return redirect(request, "users")


@page("admin")
def change_role(request: Request, form: Form) -> Response:
    username, role = field(form, "username"), field(form, "role")
    if username == request.scope["admin_user"].username:
        flash(request, "You cannot change your own role: ask another admin.", "error")
        return redirect(request, "users")
    try:
        user = set_role(services(request).db, username, role)
    except ValidationError as exc:
        flash(request, "Role not changed: " + "; ".join(str(d) for d in exc.details), "error")
        return redirect(request, "users")
    _audit(request, "user_role", f"user {user.username} is now {user.role}")
    flash(request, f"{user.username} is now {user.role}.")
    return redirect(request, "users")


@page("admin")
def change_password(request: Request, form: Form) -> Response:
    username = field(form, "username")
    password = form.get("password")
    try:
        user = set_password(services(request).db, username,
                            password if isinstance(password, str) else "")
    except (ValidationError, NotFound) as exc:
        details = "; ".join(str(d) for d in exc.details) or exc.message
        flash(request, f"Password not changed: {details}", "error")
        return redirect(request, "users")
    _audit(request, "user_password", f"password of user {user.username} changed")
    flash(request, f"Password of {user.username} changed; every session of "
                   f"{user.username} ended.")
    return redirect(request, "users")


@page("admin")
def remove(request: Request, form: Form) -> Response:
    username = field(form, "username")
    if username == request.scope["admin_user"].username:
        flash(request, "You cannot remove yourself: ask another admin.", "error")
        return redirect(request, "users")
    try:
        user = remove_user(services(request).db, username)
    except NotFound as exc:
        flash(request, f"Not removed: {exc.message}", "error")
        return redirect(request, "users")
    _audit(request, "user_remove", f"user {user.username} removed")
    flash(request, f"User {user.username} removed; their sessions ended.")
    return redirect(request, "users")


routes = [
    Route("/users", users_page, name="users"),
    Route("/users/add", add_user, methods=["POST"], name="add_user"),
    Route("/users/role", change_role, methods=["POST"], name="change_role"),
    Route("/users/password", change_password, methods=["POST"], name="change_password"),
    Route("/users/remove", remove, methods=["POST"], name="remove_user"),
]
