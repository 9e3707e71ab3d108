"""The rule editor: form-based condition builder, action forms, synced YAML/JSON source.

``POST`` with ``action``: ``save`` (validate the whole ruleset with this rule in place and
store the draft), ``update_source`` (form -> source, and check), ``apply_source``
(source -> form, and check). ``/source`` answers editor.js with the source as JSON.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from admin import forms, roundtrip, wording
from admin.services import services
from admin.templating import flash, redirect
from admin.views.common import Form, field, page
from admin.views.render import render
from admin.views.rulesets import guard, save_draft, working
from decisions.core.errors import Conflict, FieldError, NotFound, ValidationError
from rulesets.document import line_of, parse_text
from rulesets.language import (
    ACTIONS,
    FIELDS,
    OPERATOR_LABELS,
    OPERATORS,
    RULE_PARAM_GROUPS,
    STATE_TYPES,
)
from rulesets.validate import STRATEGIES, validate

NO_GUARD: tuple[int | None, int | None] = (None, None)
STRUCTURAL = ("add_condition", "add_group", "add_not", "remove", "add_action",
              "remove_action")


def _errors(details: list[FieldError]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for d in details:
        out.setdefault(d.field, []).append(d.message)
    return out


def _check(doc: dict[str, Any]) -> dict[str, list[str]]:
    try:
        validate(doc)
    except ValidationError as exc:
        return _errors(exc.details)
    return {}


def _context(name: str | None, index: int, rule: dict[str, Any], settings: dict[str, Any],
             revision: tuple[int | None, int | None], errors: dict[str, list[str]],
             source: str, fmt: str,
             message: str = "", is_new_rule: bool = False) -> dict[str, Any]:
    return {
        "name": name, "index": index, "rule": rule, "settings": settings,
        "revision": revision[0], "base_version": revision[1],
        "errors": errors, "source": source, "fmt": fmt, "message": message,
        "is_new_rule": is_new_rule, "p": f"rules[{index}]",
        "groups": forms.field_catalog(), "operators": OPERATORS, "catalog_fields": FIELDS,
        "operator_labels": OPERATOR_LABELS, "actions": ACTIONS,
        "action_labels": forms.ACTION_LABELS, "action_params": forms.ACTION_PARAMS,
        "strategies": STRATEGIES, "catalog": forms.catalog_json(), "forms": forms,
        "known_slots": wording.known_slots([{"rules": [rule]}]),
        "rule_param_groups": RULE_PARAM_GROUPS,
        "families": forms.FAMILIES, "state_types": STATE_TYPES,
    }


def _unapplied_source(form: Form, source: str, rule: dict[str, Any]) -> str:
    """Why a save would drop edits typed in the source (not applied to the form), or "".

    ``source_base`` is the source as the form last wrote it (the page, or editor.js's
    sync); a source that differs from it was typed in, and is refused when it means
    something other than the form's rule."""
    base = form.get("source_base")
    if not isinstance(base, str) or source.strip() == base.strip():
        return ""
    try:
        typed, _ = parse_text(source, "source")
    except ValidationError:
        typed = None
    if isinstance(typed, dict) and not roundtrip.differences(typed, rule):
        return ""
    return ("Not saved: the source has edits that are not in the form. Choose Apply "
            "source to form to use them, or Check and update source to drop them.")


def _unshown_messages(rule: dict[str, Any], lost: list[str], lines: dict[str, int],
                      problems: dict[str, list[str]], index: int) -> list[str]:
    """Why "Apply source to form" refused: each part of the source the form cannot show,
    with its line and what validation says of it."""
    out = ["Not applied: the form cannot show everything in this source, so the source "
           "is kept as you wrote it and the form is unchanged. Fix or remove:"]
    for path in lost:
        line = line_of(lines, path)
        why = problems.get(f"rules[{index}].{path}" if path else f"rules[{index}]")
        reason = "; ".join(why) if why else roundtrip.why_unshown(rule, path)
        out.append(f"{path or 'the rule'}{f' (line {line})' if line else ''}: {reason}")
    return out


@page("editor")
def edit_rule(request: Request, form: Form) -> Response:
    name = request.path_params["name"]
    index_param = request.path_params.get("index")
    work = working(request, name)
    rules = work.document["rules"]
    is_new = index_param is None
    index = len(rules) if index_param is None else int(index_param)
    if index > len(rules) or (not is_new and index == len(rules)):
        raise NotFound(f"ruleset {name} has no rule {index + 1}")
    settings = {k: v for k, v in work.document.items() if k != "rules"}
    if request.method == "GET":
        rule = forms.new_rule() if is_new else rules[index]
        return render(request, "editor.html", _context(
            name, index, rule, settings,
            (work.revision, work.base_version), {},
            forms.to_source(rule), "yaml",
            is_new_rule=is_new))
    return _post(request, form, name, index, settings, rules, is_new)


@page("editor")
def new_ruleset(request: Request, form: Form) -> Response:
    settings: dict[str, Any] = {"name": "", "description": "", "stacking": False,
                                "four_eyes": False}
    if request.method == "GET":
        rule = forms.new_rule()
        return render(request, "editor.html", _context(
            None, 0, rule, settings, NO_GUARD, {}, forms.to_source(rule), "yaml",
            is_new_rule=True))
    settings = forms.parse_settings(form)
    return _post(request, form, None, 0, settings, [], True)


def _post(request: Request, form: Form, name: str | None, index: int,
          settings: dict[str, Any], rules: list[dict[str, Any]], is_new: bool) -> Response:
    action = field(form, "action", "save")
    fmt = field(form, "format", "yaml")
    fmt = fmt if fmt in ("yaml", "json") else "yaml"
    revision = guard(form)
    source = form.get("source")
    source = source if isinstance(source, str) else ""
    errors: dict[str, list[str]] = {}
    if action == "apply_source":
        try:
            rule, lines = parse_text(source, "source")
        except ValidationError as exc:
            rule, lines = forms.parse_rule(form, index), {}
            errors["source"] = [str(d) for d in exc.details] or [exc.message]
        if not isinstance(rule, dict):
            errors["source"] = ["the source must describe one rule (name, when, then)"]
            rule = forms.parse_rule(form, index)
        elif "source" not in errors and (lost := roundtrip.unshown(rule, index)):
            # never drop silently: the form keeps what it had, the source stays as typed
            doc = {**settings, "rules": [*rules[:index], rule, *rules[index + 1:]]}
            errors["source"] = _unshown_messages(rule, lost, lines, _check(doc), index)
            rule = forms.parse_rule(form, index)
    else:
        rule = forms.parse_rule(form, index)
    if action.split(":")[0] in STRUCTURAL:
        rule = forms.edit(rule, action, f"rules[{index}]")
        return render(request, "editor.html", _context(
            name, index, rule, settings, revision, {}, forms.to_source(rule, fmt), fmt,
            is_new_rule=is_new))
    if action == "save" and (unapplied := _unapplied_source(form, source, rule)):
        errors["source"] = [unapplied]
    doc = {**settings, "rules": [*rules[:index], rule, *rules[index + 1:]]}
    if "source" not in errors:
        errors.update(_check(doc))
    rule = forms.renderable(rule)
    if action != "save" or errors:
        status = 422 if errors and action == "save" else 200
        context = _context(name, index, rule, settings, revision, errors,
                           source if "source" in errors else forms.to_source(rule, fmt), fmt,
                           is_new_rule=is_new)
        context["source_base"] = forms.to_source(rule, fmt)  # what the form itself writes
        return render(request, "editor.html", context, status=status)
    store = services(request).store
    if name is None and doc["name"] in store.names():
        errors["name"] = [f'a ruleset named "{doc["name"]}" exists already']
        return render(request, "editor.html", _context(
            name, index, rule, settings, revision, errors, forms.to_source(rule, fmt), fmt,
            message="Fix the problems marked below.", is_new_rule=is_new), status=422)
    try:
        info = save_draft(request, doc, *revision)
    except Conflict as exc:
        return render(request, "editor.html", _context(
            name, index, rule, settings, revision, {}, forms.to_source(rule, fmt), fmt,
            message=exc.message, is_new_rule=is_new), status=409)
    flash(request, f"Rule {rule['name']} saved to the draft of {info.name} "
                   f"(revision {info.revision}). Try it, then publish.")
    return redirect(request, "ruleset", name=info.name)


@page("editor")
def rule_source(request: Request, form: Form) -> Response:
    """Form -> source for editor.js (the form is not saved)."""
    raw = field(form, "index")
    index = int(raw) if raw.isdigit() else 0
    fmt = field(form, "format", "yaml")
    rule = forms.parse_rule(form, index)
    return JSONResponse({"source": forms.to_source(rule, "json" if fmt == "json" else "yaml")})


routes = [
    Route("/new-ruleset", new_ruleset, methods=["GET", "POST"], name="new_ruleset"),
    Route("/rulesets/{name}/rules/new", edit_rule, methods=["GET", "POST"], name="new_rule"),
    Route("/rulesets/{name}/rules/{index:int}", edit_rule, methods=["GET", "POST"],
          name="edit_rule"),
    Route("/editor/source", rule_source, methods=["POST"], name="rule_source"),
]
