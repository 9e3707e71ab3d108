"""Jinja2 templates (autoescaped, always), URL building under a mount, flash messages."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from admin import csrf, wording
from admin.models import ROLES

HERE = Path(__file__).resolve().parent
FLASH = "_flash"


def make_templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its name: rule content is never trusted
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["ROLES"] = ROLES
    env.filters["pathid"] = pathid
    env.filters["when"] = when
    env.filters["strategy_label"] = wording.strategy_label
    env.filters["slot_label"] = wording.slot_label
    env.filters["rule_status"] = wording.rule_status
    env.filters["datetime_local"] = wording.datetime_local
    env.filters["rounded"] = wording.rounded
    env.filters["moment"] = wording.moment
    templates = Jinja2Templates(env=env)
    templates.context_processors.append(_globals)
    return templates


def pathid(path: str) -> str:
    """A document path as an HTML id: ``rules[0].when.all[1]`` -> ``f-rules-0-when-all-1``."""
    return "f-" + re.sub(r"[^A-Za-z0-9_]+", "-", path).strip("-")


def when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else ""


def templates_of(request: Request) -> Jinja2Templates:
    templates: Jinja2Templates = request.app.state.templates
    return templates


def url(request: Request, name: str, /, **params: Any) -> str:
    """A path to one of the admin's routes, right whether the admin is mounted or not.

    Built from the admin's own router (names never clash with the host app's) and the
    mount's ``root_path``."""
    router = request.app.router
    path = router.url_path_for(name, **{k: str(v) for k, v in params.items()})
    return request.scope.get("root_path", "").rstrip("/") + str(path)


def flash(request: Request, message: str, level: str = "success") -> None:
    # a new list: the session is saved when its data differs from what was loaded
    request.session[FLASH] = [*request.session.get(FLASH, []), [level, message]]


def redirect(request: Request, name: str, /, query: str = "", **params: Any) -> Response:
    target = url(request, name, **params) + (f"?{query}" if query else "")
    return RedirectResponse(target, status_code=303)


def _globals(request: Request) -> dict[str, Any]:
    def url_for_name(name: str, /, **params: Any) -> str:
        return url(request, name, **params)

    def static(path: str) -> str:
        return url(request, "static", path=path)

    return {
        "url": url_for_name,
        "static": static,
        "csrf_token": csrf.token(request.session),
        "user": request.scope.get("admin_user"),
        "take_flashes": lambda: request.session.pop(FLASH, []),
        "currency": request.app.state.admin.settings.currency,
        "money": lambda value: wording.money(value, request.app.state.admin.settings.currency),
    }

