"""The 'try it' panel: pick a user (or paste an event and a profile), choose a 'now', and
see which rules would fire and why. Nothing is stored, nothing is sent."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin import tryform
from admin.forms import FieldLabels
from admin.services import services
from admin.views.common import Form, field, page
from admin.views.render import render
from admin.views.rulesets import working
from decisions.core.errors import NotFound, ValidationError
from decisions.core.events import parse_time
from decisions.runtime.archive import EventArchive
from decisions.simulate.trial import SAMPLE_EVENT, SAMPLE_PROFILE, parse_profile, try_event
from rulesets.language import OPERATOR_LABELS


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
        # how the event is given: a form per event type, JSON, or the shopper's last event
        "source": field(form, "source") or (
            "json" if request.method == "POST" and field(form, "event") else "form"),
        "event": field(form, "event") or json.dumps(SAMPLE_EVENT, indent=2),
        "profile": field(form, "profile") if request.method == "POST"
        else json.dumps(SAMPLE_PROFILE, indent=2),
    }
    fields = (tryform.form_values(SAMPLE_EVENT) if request.method == "GET"
              else {k: str(v) for k, v in form.items() if k == "etype" or k.startswith("prop.")})
    archive = EventArchive(svc.db)
    context: dict[str, Any] = {"name": name, "work": work, "values": values, "errors": {},
                               "result": None, "label": "", "effects": {},
                               "fields": fields, "tryform": tryform,
                               "shoppers": archive.recent_users(),
                               "field_labels": FieldLabels(),
                               "operator_labels": OPERATOR_LABELS}
    if request.method == "GET":
        return render(request, "trial.html", context)
    errors: dict[str, str] = {}
    now = _parse_now(values["now"])
    if now is None:
        errors["now"] = "expected a date and time such as 2026-11-26T12:00:00 (UTC)"
    event_data: Any = None
    profile: Any = None
    if values["source"] == "last":
        last = archive.latest(values["user_id"]) if values["user_id"] else None
        if last is None:
            errors["user_id"] = ("choose a shopper with archived events to use their last "
                                 "event" if not values["user_id"] else
                                 f"no archived event of {values['user_id']}")
        else:
            event_data = {"event_id": last.event_id, "type": last.type,
                          "user_id": last.user_id, "properties": last.properties}
            values["event"] = json.dumps(event_data, indent=2)
            context["fields"] = tryform.form_values(event_data)
    elif values["source"] == "form":
        event_data, form_errors = tryform.event_from_form(form, values["user_id"])
        errors.update(form_errors)
        if not form_errors:
            values["event"] = json.dumps(event_data, indent=2)
    else:
        try:
            event_data = json.loads(values["event"])
        except json.JSONDecodeError as exc:
            errors["event"] = f"not valid JSON: {exc.msg} (line {exc.lineno})"
    try:
        profile = json.loads(values["profile"]) if values["profile"] else {}
        if values["user_id"] and profile == SAMPLE_PROFILE:
            profile = {}  # the untouched sample must not mask a picked shopper's live profile
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
                               user_id=values["user_id"], client=svc.redis, db=svc.db,
                               global_caps=(svc.settings.offer_cap_per_day,
                                            svc.settings.offer_cap_per_week))
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
