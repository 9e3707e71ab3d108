"""Erasure (GDPR/CCPA) in PostgreSQL: a user's rows, a tombstone, a withdrawn consent kept.

``erase_rows`` runs in one transaction:

- records the **tombstone** (``erasures``: user id, erased-at), so events of the user from
  before the erasure that are still in the topic (in flight, or replayed) are not theirs
  any more. The worker reads the Redis copy (``d:erased:{uid}``, written first by the
  caller, see ``api/routes/privacy.py``); this row is the durable record, shown by export
  and kept ``DECISIONS_ERASURE_TOMBSTONE_DAYS`` (older ones are pruned here);
- deletes the user's rows in ``customers``, ``offer_feedback``, ``decisions`` and the event
  archive (``events``);
- keeps a **withdrawn consent**: a shopper who had withdrawn it keeps a bare ``customers``
  row (user id, ``consent = false``, nothing else), so they get no personalization after
  the erasure either, until a ``consent`` event grants it anew. Honouring an objection is
  a reason to keep that much (GDPR art. 17(3)(b), 21).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, select, text

from decisions.core.models import ArchivedEvent, Customer, Decision, Erasure, OfferFeedback

TABLES: tuple[tuple[str, Any], ...] = (
    ("customers", Customer),
    ("offer_feedback", OfferFeedback),
    ("decisions", Decision),
    ("events", ArchivedEvent),
)

_UPSERT_TOMBSTONE = text(
    "INSERT INTO erasures (user_id, erased_at) VALUES (:u, :t) "
    "ON CONFLICT (user_id) DO UPDATE SET erased_at = GREATEST(erasures.erased_at, :t)")
_WITHDRAWN = text(
    "SELECT true FROM customers WHERE user_id = :u"
    " AND (NOT consent OR attributes ->> 'consent' = 'false')")
_KEEP_WITHDRAWAL = text(
    "INSERT INTO customers (user_id, consent, segments, attributes, updated_at)"
    " VALUES (:u, false, '{}', '{}', now())")


def erase_rows(engine: Engine, user_id: str, erased_at: datetime,
               tombstone_days: int) -> tuple[dict[str, int], bool]:
    """Rows deleted per table, and whether a withdrawn consent was kept."""
    counts: dict[str, int] = {}
    with engine.begin() as conn:
        record_tombstone(conn, user_id, erased_at, tombstone_days)
        withdrawn = conn.execute(_WITHDRAWN, {"u": user_id}).first() is not None
        for name, model in TABLES:
            result = conn.execute(delete(model).where(model.user_id == user_id))
            counts[name] = int(result.rowcount or 0)
        if withdrawn:
            conn.execute(_KEEP_WITHDRAWAL, {"u": user_id})
    return counts, withdrawn


def record_tombstone(conn: Connection, user_id: str, erased_at: datetime,
                     tombstone_days: int) -> None:
    conn.execute(_UPSERT_TOMBSTONE, {"u": user_id, "t": erased_at})
    conn.execute(delete(Erasure).where(
        Erasure.erased_at < erased_at - timedelta(days=tombstone_days)))


def export_rows(engine: Engine, user_id: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        for name, model in (*TABLES, ("erasures", Erasure)):
            rows = conn.execute(select(model.__table__).where(model.user_id == user_id))
            out[name] = [dict(row._mapping) for row in rows]
    return out
