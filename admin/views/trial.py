"""The 'try it' panel: pick a user (or paste an event and a profile), choose a 'now', and
see which rules would fire and why. Nothing is stored, nothing is sent."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin.services import services
from admin.views.common import Form, field, page
from admin.views.render import render
from admin.views.rulesets import working
from decisions.core.errors import NotFound, ValidationError
from decisions.core.events import parse_time
from decisions.simulate.trial import SAMPLE_EVENT, SAMPLE_PROFILE, parse_profile, try_event
from rulesets.language import FIELDS, OPERATOR_LABELS


def _now_text(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _parse_now(raw: str) -> datetime | None:
    if not raw:
        return datetime.now(UTC).replace(microsecond=0)
    try:
        return parse_time(raw)
    except ValueError:
        return None


@page("viewer")
def trial(request: Request, form: Form) -> Response:
    name = request.path_params["name"]
    svc = services(request)
    work = working(request, name)
    values = {
        "which": field(form, "which", "draft" if work.draft else "published"),
        "user_id": field(form, "user_id"),
        "now": field(form, "now") or _now_text(datetime.now(UTC)),
        "event": field(form, "event") or json.dumps(SAMPLE_EVENT, indent=2),
        "profile": field(form, "profile") if request.method == "POST"
        else json.dumps(SAMPLE_PROFILE, indent=2),
    }
    context: dict[str, Any] = {"name": name, "work": work, "values": values, "errors": {},
                               "result": None, "label": "", "effects": {},
                               "field_labels": {p: f.label for p, f in FIELDS.items()},
                               "operator_labels": OPERATOR_LABELS}
    if request.method == "GET":
        return render(request, "trial.html", context)
    errors: dict[str, str] = {}
    now = _parse_now(values["now"])
    if now is None:
        errors["now"] = "expected a date and time such as 2026-11-26T12:00:00 (UTC)"
    event_data: Any = None
    profile: Any = None
    try:
        event_data = json.loads(values["event"])
    except json.JSONDecodeError as exc:
        errors["event"] = f"not valid JSON: {exc.msg} (line {exc.lineno})"
    try:
        profile = json.loads(values["profile"]) if values["profile"] else {}
    except json.JSONDecodeError as exc:
        errors["profile"] = f"not valid JSON: {exc.msg} (line {exc.lineno})"
    if values["which"] == "published":
        if work.active_version is None:
            errors["which"] = "this ruleset has no published version yet"
            document, label = work.document, ""
        else:
            version = svc.store.get_version(name, work.active_version)
            document, label = version.document, f"published version {version.version}"
    else:
        if work.draft is None:
            errors["which"] = "there is no draft: choose the published version"
        document, label = work.document, f"draft revision {work.revision}"
    if not errors and now is not None:
        try:
            result = try_event(document, event_data, parse_profile(profile), now,
                               user_id=values["user_id"], client=svc.redis, db=svc.db)
            context["result"] = result
            context["label"] = label
            context["effects"] = {}
            for effect in result.effects:
                context["effects"].setdefault(effect.match.rule, []).append(
                    {**effect.payload, "kind": effect.kind})
        except ValidationError as exc:
            for d in exc.details or []:
                key = "event" if d.field.startswith("event") or not d.field else "profile"
                errors[key] = (errors.get(key, "") + f" {d.field}: {d.message}").strip()
            if not exc.details:
                errors["event"] = exc.message
        except NotFound as exc:
            errors["which"] = exc.message
    context["errors"] = errors
    return render(request, "trial.html", context, status=422 if errors else 200)


routes = [Route("/rulesets/{name}/try", trial, methods=["GET", "POST"], name="trial")]
