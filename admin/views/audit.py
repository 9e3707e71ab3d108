"""The audit log: who did what, when; filterable by user, ruleset and date."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin.diffview import rule_changes, side_by_side
from admin.services import services
from admin.views.common import Form, page
from admin.views.render import render
from decisions.core.errors import NotFound
from rulesets.models import AuditEntry

PAGE = 100


def parse_day(raw: str) -> date | None:
    try:
        return date.fromisoformat(raw) if raw else None
    except ValueError:
        return None


@page("viewer")
def audit(request: Request, form: Form) -> Response:
    q = request.query_params
    actor, ruleset = q.get("user", ""), q.get("ruleset", "")
    start, end = parse_day(q.get("from", "")), parse_day(q.get("to", ""))
    try:
        offset = max(0, int(q.get("offset", "0")))
    except ValueError:
        offset = 0
    stmt = select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
    if actor:
        stmt = stmt.where(AuditEntry.actor == actor)
    if ruleset:
        stmt = stmt.where(AuditEntry.ruleset == ruleset)
    if start:
        stmt = stmt.where(AuditEntry.at >= datetime(start.year, start.month, start.day, tzinfo=UTC))
    if end:
        stmt = stmt.where(AuditEntry.at < datetime(end.year, end.month, end.day, tzinfo=UTC)
                          + timedelta(days=1))
    with Session(services(request).db) as s:
        entries = s.scalars(stmt.offset(offset).limit(PAGE + 1)).all()
        actors = s.scalars(select(AuditEntry.actor).distinct().order_by(AuditEntry.actor)).all()
        names = s.scalars(select(AuditEntry.ruleset).distinct()
                          .where(AuditEntry.ruleset.is_not(None))
                          .order_by(AuditEntry.ruleset)).all()
    filters = {"user": actor, "ruleset": ruleset, "from": q.get("from", ""),
               "to": q.get("to", "")}
    return render(request, "audit.html", {
        "entries": entries[:PAGE], "more": len(entries) > PAGE, "offset": offset,
        "page_size": PAGE, "actors": actors, "names": names, "filters": filters,
        "nav": "audit",
    })


@page("viewer")
def audit_entry(request: Request, form: Form) -> Response:
    with Session(services(request).db) as s:
        entry = s.get(AuditEntry, request.path_params["entry_id"])
    if entry is None:
        raise NotFound("no such audit entry")
    return render(request, "audit_entry.html", {
        "entry": entry, "rows": side_by_side(entry.before, entry.after),
        "summary": rule_changes(entry.before, entry.after), "nav": "audit",
    })


routes = [
    Route("/audit", audit, name="audit"),
    Route("/audit/{entry_id:int}", audit_entry, name="audit_entry"),
]
