"""The ruleset list and one ruleset's page (its rules, draft, settings)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin.diffview import rule_changes
from admin.forms import FieldLabels, parse_economics
from admin.reports import budgets_left
from admin.services import services
from admin.templating import flash, redirect
from admin.views.common import Form, field, page
from admin.views.render import render
from decisions.core.errors import Conflict, NotFound, ValidationError
from rulesets.language import OPERATOR_LABELS
from rulesets.models import Ruleset, RulesetDraft, RulesetVersion
from rulesets.store import DraftInfo


@dataclass
class Overview:
    name: str
    description: str
    four_eyes: bool
    active_version: int | None
    draft_revision: int | None
    last_editor: str
    last_change: datetime


def overview(db: Engine) -> list[Overview]:
    with Session(db) as s:
        latest = (select(RulesetVersion.ruleset_id, func.max(RulesetVersion.version).label("v"))
                  .group_by(RulesetVersion.ruleset_id).subquery())
        rows = s.execute(
            select(Ruleset, RulesetDraft, RulesetVersion)
            .outerjoin(RulesetDraft, RulesetDraft.ruleset_id == Ruleset.id)
            .outerjoin(latest, latest.c.ruleset_id == Ruleset.id)
            .outerjoin(RulesetVersion, (RulesetVersion.ruleset_id == Ruleset.id)
                       & (RulesetVersion.version == latest.c.v))
            .order_by(Ruleset.name)).all()
        out = []
        for rs, draft, version in rows:
            if draft is not None:
                editor, when = draft.updated_by, draft.updated_at
            elif version is not None:
                editor, when = version.author, version.created_at
            else:
                editor, when = "", rs.updated_at
            out.append(Overview(rs.name, rs.description, rs.four_eyes, rs.active_version,
                                draft.revision if draft else None, editor, when))
        return out


@dataclass
class Working:
    """What the editor works on: the draft, else the published version."""

    document: dict[str, Any]
    draft: DraftInfo | None
    active_version: int | None

    @property
    def revision(self) -> int | None:
        return self.draft.revision if self.draft else None

    @property
    def base_version(self) -> int | None:
        """The published version edits start from when there is no draft."""
        return None if self.draft else self.active_version


def save_draft(request: Request, doc: dict[str, Any], revision: int | None,
               base_version: int | None) -> DraftInfo:
    """``store.save_draft`` with the editor's guard. Also refuses when the editor started
    without a draft but someone has made one since (the store only checks revisions of a
    draft the editor saw)."""
    store = services(request).store
    user = request.scope["admin_user"]
    if revision is None and doc.get("name") in store.names():
        current = store.draft(doc["name"])
        if current is not None:
            raise Conflict(
                f'the draft of "{doc["name"]}" was started by {current.updated_by} at '
                f"{current.updated_at:%Y-%m-%d %H:%M:%S} UTC while you were editing; reload "
                "and apply your change again")
    return store.save_draft(doc, user.username, expected_revision=revision,
                            base_version=base_version)


def guard(form: Form) -> tuple[int | None, int | None]:
    """``save_draft``'s lost-update guard from the form's hidden inputs: the draft revision
    the editor loaded, or the published version it started from."""
    rev, base = field(form, "revision"), field(form, "base_version")
    return (int(rev) if rev.isdigit() else None, int(base) if base.isdigit() else None)


def working(request: Request, name: str) -> Working:
    store = services(request).store
    draft = store.draft(name)  # NotFound for an unknown ruleset
    active = None
    try:
        active = store.get_version(name)
    except NotFound:
        if draft is None:
            raise
    document = draft.document if draft else active.document  # type: ignore[union-attr]
    return Working(document, draft, active.version if active else None)


def live_budgets(request: Request, name: str, work: Working) -> tuple[list[Any], str]:
    """What is left of the budgets the published version enforces (the draft's if none)."""
    svc = services(request)
    document = (svc.store.get_version(name, work.active_version).document
                if work.active_version is not None and work.draft is not None
                else work.document)
    return budgets_left(lambda: svc.redis, document)


@page("viewer")
def ruleset_list(request: Request, form: Form) -> Response:
    return render(request, "rulesets.html", {"rulesets": overview(services(request).db)})


@page("viewer")
def ruleset_detail(request: Request, form: Form) -> Response:
    name = request.path_params["name"]
    work = working(request, name)
    svc = services(request)
    versions = svc.store.versions(name)
    changes: list[str] = []
    four_eyes = bool(work.document.get("four_eyes"))
    if work.draft is not None and work.active_version is not None:
        published = svc.store.get_version(name, work.active_version).document
        changes = rule_changes(published, work.draft.document)
        four_eyes = four_eyes or bool(published.get("four_eyes"))
    budgets, budgets_error = live_budgets(request, name, work)
    return render(request, "ruleset.html", {
        "changes": changes, "four_eyes": four_eyes,
        "budgets": budgets, "budgets_error": budgets_error,
        "rules_by_priority": sorted(enumerate(work.document["rules"]),
                                    key=lambda item: (-int(item[1].get("priority", 0)), item[0])),
        "name": name, "work": work, "doc": work.document, "versions": versions[:5],
        "backtests": svc.backtests.of_ruleset(name)[:5],
        "field_labels": FieldLabels(),
        "operator_labels": OPERATOR_LABELS,
    })


@page("editor")
def ruleset_settings(request: Request, form: Form) -> Response:
    name = request.path_params["name"]
    work = working(request, name)
    doc = dict(work.document)
    doc["description"] = field(form, "description")
    doc["stacking"] = "stacking" in form
    doc["four_eyes"] = "four_eyes" in form
    parse_economics(form, doc)  # holdout and frequency caps (#19)
    return _save(request, name, doc, form, "Settings saved")


@page("editor")
def delete_rule(request: Request, form: Form) -> Response:
    name = request.path_params["name"]
    index = request.path_params["index"]
    work = working(request, name)
    rules = list(work.document["rules"])
    if index >= len(rules):
        raise NotFound(f"ruleset {name} has no rule {index + 1}")
    removed = rules.pop(index)
    return _save(request, name, {**work.document, "rules": rules}, form,
                 f"Rule {removed['name']} deleted from the draft")


def _save(request: Request, name: str, doc: dict[str, Any], form: Form, done: str) -> Response:
    try:
        info = save_draft(request, doc, *guard(form))
    except ValidationError as exc:
        flash(request, "Not saved: " + "; ".join(str(d) for d in exc.details), "error")
    except Conflict as exc:
        flash(request, "Not saved: " + exc.message, "error")
    else:
        flash(request, f"{done} (draft revision {info.revision}).")
    return redirect(request, "ruleset", name=name)


routes = [
    Route("/", ruleset_list, name="rulesets"),
    Route("/rulesets/{name}", ruleset_detail, name="ruleset"),
    Route("/rulesets/{name}/settings", ruleset_settings, methods=["POST"],
          name="ruleset_settings"),
    Route("/rulesets/{name}/rules/{index:int}/delete", delete_rule, methods=["POST"],
          name="delete_rule"),
]
