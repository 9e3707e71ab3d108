"""Publish (with a comment, four eyes where demanded), version history, diff, rollback."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin.diffview import rule_changes, side_by_side
from admin.services import services
from admin.templating import flash, redirect
from admin.views.common import Form, field, page
from admin.views.render import render
from decisions.core.errors import Forbidden, NotFound, ValidationError


@page("viewer")
def history(request: Request, form: Form) -> Response:
    name = request.path_params["name"]
    store = services(request).store
    draft = store.draft(name)
    versions = store.versions(name)
    active = None
    try:
        active = store.get_version(name).version
    except NotFound:
        pass
    return render(request, "history.html", {"name": name, "versions": versions,
                                            "active": active, "draft": draft})


def _document(request: Request, name: str, which: str) -> tuple[str, dict[str, Any] | None]:
    store = services(request).store
    if which == "draft":
        draft = store.draft(name)
        if draft is None:
            raise NotFound(f"ruleset {name} has no draft")
        return f"draft (revision {draft.revision})", draft.document
    if not which:
        return "(nothing)", None
    try:
        number = int(which)
    except ValueError:
        raise NotFound(f"no version {which!r}") from None
    return f"version {number}", store.get_version(name, number).document


@page("viewer")
def diff(request: Request, form: Form) -> Response:
    name = request.path_params["name"]
    a = request.query_params.get("a", "")
    b = request.query_params.get("b", "draft")
    label_a, doc_a = _document(request, name, a)
    label_b, doc_b = _document(request, name, b)
    versions = services(request).store.versions(name)
    return render(request, "diff.html", {
        "name": name, "a": a, "b": b, "label_a": label_a, "label_b": label_b,
        "rows": side_by_side(doc_a, doc_b), "summary": rule_changes(doc_a, doc_b),
        "versions": versions, "has_draft": services(request).store.draft(name) is not None,
    })


@page("publisher")
def publish(request: Request, form: Form) -> Response:
    name = request.path_params["name"]
    user = request.scope["admin_user"]
    store = services(request).store
    comment = field(form, "comment")
    draft = store.draft(name)
    if draft is None:
        flash(request, "There is no draft to publish.", "error")
        return redirect(request, "ruleset", name=name)
    if field(form, "revision") != str(draft.revision):
        flash(request, f"Not published: the draft changed since you looked (now revision "
                       f"{draft.revision}, by {draft.updated_by}). Check it and publish again.",
              "error")
        return redirect(request, "ruleset", name=name)
    if not comment:
        flash(request, "Not published: say what changes and why in the comment.", "error")
        return redirect(request, "ruleset", name=name)
    # four eyes when the draft or the live version asks for it: switching the flag off in
    # a draft must not let its own editor publish that draft alone
    live = svc_live_four_eyes(request, name)
    four_eyes = bool(draft.document.get("four_eyes")) or live
    if four_eyes and draft.updated_by == user.username:
        flash(request, "Not published: this ruleset needs a second person. You edited the "
                       "draft last; another publisher approves and publishes it.", "error")
        return redirect(request, "ruleset", name=name)
    approver = user.username if four_eyes else None
    try:
        version = store.publish(name, user.username, comment, approved_by=approver)
    except (Forbidden, ValidationError) as exc:
        flash(request, f"Not published: {exc.message}"
              + (" (" + "; ".join(str(d) for d in exc.details) + ")" if exc.details else ""),
              "error")
        return redirect(request, "ruleset", name=name)
    flash(request, f"Published {name} version {version}. Workers switch to it within seconds.")
    return redirect(request, "history", name=name)


def svc_live_four_eyes(request: Request, name: str) -> bool:
    try:
        return bool(services(request).store.get_version(name).document.get("four_eyes"))
    except NotFound:
        return False


@page("publisher")
def rollback(request: Request, form: Form) -> Response:
    name = request.path_params["name"]
    user = request.scope["admin_user"]
    try:
        to_version = int(field(form, "to_version"))
    except ValueError:
        raise NotFound("choose a version to roll back to") from None
    comment = field(form, "comment") or f"rollback to version {to_version}"
    version = services(request).store.rollback(name, to_version, user.username, comment)
    flash(request, f"Rolled back: version {version} of {name} is version {to_version}'s rules, "
                   "now live.")
    return redirect(request, "history", name=name)


routes = [
    Route("/rulesets/{name}/history", history, name="history"),
    Route("/rulesets/{name}/diff", diff, name="diff"),
    Route("/rulesets/{name}/publish", publish, methods=["POST"], name="publish"),
    Route("/rulesets/{name}/rollback", rollback, methods=["POST"], name="rollback"),
]
