"""The versioned ruleset store in PostgreSQL.

A ruleset has one editable draft and immutable numbered versions; ``active_version``
points at the published one. Publishing copies the draft into a new version; rolling
back publishes an old version's document as a new version. Every change writes an audit
entry (who, when, what, before and after). Workers find what to run with
``active_documents`` and notice changes cheaply with ``active_marker``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from decisions.core.db import utcnow
from decisions.core.errors import Conflict, Forbidden, NotFound, ValidationError
from rulesets.diff import diff_documents, summary
from rulesets.models import AuditEntry, Ruleset, RulesetDraft, RulesetVersion
from rulesets.validate import validate

NOTIFY_CHANNEL = "decisions_rulesets"


@dataclass(frozen=True)
class ActiveVersion:
    name: str
    version: int
    document: dict[str, Any]


@dataclass(frozen=True)
class DraftInfo:
    name: str
    revision: int
    document: dict[str, Any]
    updated_by: str
    updated_at: datetime
    base_version: int | None
    approval_requested_by: str | None


class RulesetStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- reading -----------------------------------------------------------------------
    def active_marker(self) -> str:
        """Changes whenever any ruleset's active version changes (one cheap query)."""
        with self.engine.connect() as conn:
            marker = conn.execute(text(
                "SELECT coalesce(string_agg(name || ':' || active_version, ',' ORDER BY name), '')"
                " FROM rulesets WHERE active_version IS NOT NULL"
            )).scalar_one()
        return str(marker)

    def active_documents(self) -> list[ActiveVersion]:
        with Session(self.engine) as s:
            rows = s.execute(
                select(Ruleset.name, RulesetVersion.version, RulesetVersion.document)
                .join(RulesetVersion, (RulesetVersion.ruleset_id == Ruleset.id)
                      & (RulesetVersion.version == Ruleset.active_version))
                .order_by(Ruleset.name)
            ).all()
        return [ActiveVersion(n, v, d) for n, v, d in rows]

    def names(self) -> list[str]:
        with Session(self.engine) as s:
            return list(s.scalars(select(Ruleset.name).order_by(Ruleset.name)))

    def is_empty(self) -> bool:
        with Session(self.engine) as s:
            return not s.scalar(select(func.count()).select_from(Ruleset))

    def get_version(self, name: str, version: int | None = None) -> ActiveVersion:
        with Session(self.engine) as s:
            rs = self._ruleset(s, name)
            number = version if version is not None else rs.active_version
            if number is None:
                raise NotFound(f'ruleset "{name}" has no published version')
            row = s.scalar(select(RulesetVersion).where(
                RulesetVersion.ruleset_id == rs.id, RulesetVersion.version == number))
            if row is None:
                raise NotFound(f'ruleset "{name}" has no version {number}')
            return ActiveVersion(name, row.version, row.document)

    def versions(self, name: str) -> list[RulesetVersion]:
        with Session(self.engine) as s:
            rs = self._ruleset(s, name)
            return list(s.scalars(select(RulesetVersion).where(
                RulesetVersion.ruleset_id == rs.id).order_by(RulesetVersion.version.desc())))

    def document(self, name: str, version: int | str | None = None) -> dict[str, Any]:
        """A version's document; ``"draft"`` for the draft, None for the active version."""
        if version == "draft":
            draft = self.draft(name)
            if draft is None:
                raise NotFound(f'ruleset "{name}" has no draft')
            return draft.document
        if isinstance(version, str):
            version = _version_number(version)
        return self.get_version(name, version).document

    def diff(self, name: str, a: int | str, b: int | str) -> dict[str, Any]:
        """A structured diff from version ``a`` to version ``b`` (either may be "draft")."""
        return diff_documents(self.document(name, a), self.document(name, b))

    def audit(self, name: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """Audit entries, newest first (of one ruleset, or of all)."""
        with Session(self.engine) as s:
            stmt = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
            if name is not None:
                stmt = stmt.where(AuditEntry.ruleset == name)
            return list(s.scalars(stmt))

    def draft(self, name: str) -> DraftInfo | None:
        with Session(self.engine) as s:
            rs = self._ruleset(s, name)
            d = s.get(RulesetDraft, rs.id)
            if d is None:
                return None
            return DraftInfo(name, d.revision, d.document, d.updated_by, d.updated_at,
                             d.base_version, d.approval_requested_by)

    # -- writing -----------------------------------------------------------------------
    def save_draft(self, document: Any, actor: str, *, expected_revision: int | None = None,
                   base_version: int | None = None,
                   lines: dict[str, int] | None = None) -> DraftInfo:
        """Validate and store the draft, guarding against lost updates.

        ``expected_revision`` is the draft revision the editor loaded: saving over a newer
        draft, or over a draft that has been published since, is refused. ``base_version``
        is the published version the editor started from when there was no draft: saving
        after someone else published a newer version is refused. Both refusals name who
        made the newer change and when."""
        doc = validate(document, lines)
        with Session(self.engine) as s, s.begin():
            rs = s.scalar(select(Ruleset).where(Ruleset.name == doc["name"]).with_for_update())
            if rs is None:
                rs = Ruleset(name=doc["name"], description=doc["description"],
                             four_eyes=doc["four_eyes"])
                s.add(rs)
                s.flush()
                self._audit(s, actor, "create", doc["name"], None, None, doc)
            draft = s.get(RulesetDraft, rs.id, with_for_update=True)
            # before: the draft replaced, else the published version the draft starts from
            before = draft.document if draft else self._active_doc(s, rs, rs.active_version)
            if draft is None:
                stale = expected_revision is not None or (
                    base_version is not None and rs.active_version != base_version)
                if stale and rs.active_version is not None:
                    latest = s.scalar(select(RulesetVersion).where(
                        RulesetVersion.ruleset_id == rs.id,
                        RulesetVersion.version == rs.active_version))
                    assert latest is not None
                    raise Conflict(
                        f'"{doc["name"]}" was changed since you started editing: version '
                        f"{latest.version} was published by "
                        f"{latest.approved_by or latest.author} at "
                        f"{latest.created_at:%Y-%m-%d %H:%M:%S} UTC; reload and apply your "
                        "change again")
                draft = RulesetDraft(ruleset_id=rs.id, document=doc, revision=1,
                                     base_version=rs.active_version, updated_by=actor,
                                     updated_at=utcnow())
                s.add(draft)
            else:
                if expected_revision is not None and draft.revision != expected_revision:
                    raise Conflict(
                        f'the draft of "{doc["name"]}" was changed by {draft.updated_by} at '
                        f"{draft.updated_at:%Y-%m-%d %H:%M:%S} UTC (revision {draft.revision}, "
                        f"you edited revision {expected_revision}); reload and apply your "
                        "change again"
                    )
                draft.document = doc
                draft.revision += 1
                draft.updated_by = actor
                draft.updated_at = utcnow()
                draft.approval_requested_by = None
            rs.description = doc["description"]
            if rs.active_version is None:  # else four_eyes changes when a version goes live
                rs.four_eyes = doc["four_eyes"]
            rs.updated_at = utcnow()
            self._audit(s, actor, "save_draft", doc["name"], None, before, doc,
                        summary(before, doc))
            s.flush()
            return DraftInfo(doc["name"], draft.revision, doc, actor, draft.updated_at,
                             draft.base_version, None)

    def publish(self, name: str, actor: str, comment: str = "", *,
                approved_by: str | None = None) -> int:
        """Publish the draft as a new immutable version and make it active."""
        with Session(self.engine) as s, s.begin():
            rs = self._ruleset(s, name, lock=True)
            draft = s.get(RulesetDraft, rs.id, with_for_update=True)
            if draft is None:
                raise NotFound(f'ruleset "{name}" has no draft to publish')
            doc = validate(draft.document)
            live = self._active_doc(s, rs, rs.active_version)
            # four eyes when the draft or the live version asks for it: a draft cannot
            # switch the rule off for its own publication
            if doc["four_eyes"] or (live or {}).get("four_eyes"):
                if approved_by is None:
                    raise Forbidden(f'ruleset "{name}" needs a second person to approve publishing')
                if approved_by == draft.updated_by:
                    raise Forbidden(
                        "the approver must be someone other than the draft's last editor")
            # the version is the writer's; whoever else published it approved it
            writer = draft.updated_by
            approver = approved_by or (actor if actor != writer else None)
            version = self._new_version(s, rs, doc, writer, comment, approver)
            rs.four_eyes = doc["four_eyes"]
            s.delete(draft)
            self._audit(s, actor, "publish", name, version, self._active_doc(s, rs, version - 1),
                        doc, comment)
            return version

    def rollback(self, name: str, to_version: int, actor: str, comment: str = "") -> int:
        """Publish an earlier version's document as a new version."""
        with Session(self.engine) as s, s.begin():
            rs = self._ruleset(s, name, lock=True)
            old = s.scalar(select(RulesetVersion).where(
                RulesetVersion.ruleset_id == rs.id, RulesetVersion.version == to_version))
            if old is None:
                raise NotFound(f'ruleset "{name}" has no version {to_version}')
            before = self._active_doc(s, rs, rs.active_version)
            version = self._new_version(s, rs, old.document, actor,
                                        comment or f"rollback to version {to_version}", None)
            rs.four_eyes = bool(old.document.get("four_eyes"))
            self._audit(s, actor, "rollback", name, version, before, old.document,
                        comment or f"rollback to version {to_version}")
            return version

    def import_document(self, document: Any, actor: str, comment: str = "", *,
                        publish: bool = True, lines: dict[str, int] | None = None) -> int | None:
        """Save as draft and (by default) publish: the CLI's and ``decisions up``'s import."""
        doc = validate(document, lines)
        self.save_draft(doc, actor)
        if not publish:
            return None
        if doc["four_eyes"]:
            raise ValidationError(
                f'ruleset "{doc["name"]}" requires four-eyes approval: saved as a draft; '
                "publish it from the admin UI with a second person")
        return self.publish(doc["name"], actor, comment)

    # -- helpers -----------------------------------------------------------------------
    def _ruleset(self, s: Session, name: str, lock: bool = False) -> Ruleset:
        stmt = select(Ruleset).where(Ruleset.name == name)
        rs = s.scalar(stmt.with_for_update() if lock else stmt)
        if rs is None:
            raise NotFound(f'no ruleset named "{name}"')
        return rs

    def _active_doc(self, s: Session, rs: Ruleset, version: int | None) -> dict[str, Any] | None:
        if version is None:
            return None
        return s.scalar(select(RulesetVersion.document).where(
            RulesetVersion.ruleset_id == rs.id, RulesetVersion.version == version))

    def _new_version(self, s: Session, rs: Ruleset, doc: dict[str, Any], actor: str,
                     comment: str, approved_by: str | None) -> int:
        last = s.scalar(select(func.max(RulesetVersion.version)).where(
            RulesetVersion.ruleset_id == rs.id)) or 0
        version = int(last) + 1
        s.add(RulesetVersion(ruleset_id=rs.id, version=version, document=doc, author=actor,
                             comment=comment, approved_by=approved_by, created_at=utcnow()))
        rs.active_version = version
        rs.updated_at = utcnow()
        s.flush()
        s.execute(text("SELECT pg_notify(:c, :p)"),
                  {"c": NOTIFY_CHANNEL, "p": f"{rs.name}:{version}"})
        return version

    def _audit(self, s: Session, actor: str, action: str, ruleset: str | None,
               version: int | None, before: Any, after: Any, comment: str = "") -> None:
        s.add(AuditEntry(actor=actor, action=action, ruleset=ruleset, version=version,
                         before=before, after=after, comment=comment, at=utcnow()))


def _version_number(text_: str) -> int:
    try:
        return int(text_.lstrip("v"))
    except ValueError:
        raise ValidationError(f'"{text_}" is not a version: give a number or "draft"') from None
