"""Customer attributes from PostgreSQL, cached in Redis (``d:cust:{uid}``).

Invalidation on change: whoever changes a customer through our code calls
``invalidate``; changes made by other systems are found by ``invalidate_changed``, which
the worker runs every reload interval (rows whose ``updated_at`` moved past a watermark,
with a few seconds of overlap for transactions that committed late). The cache also
expires on its own after ``CACHE_TTL`` seconds.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Engine, text

from decisions.core import keys
from decisions.core.resp.pipeline import RawPipeline


def queue_fills(pipe: RawPipeline, fills: list[tuple[str, bytes]]) -> None:
    """Cache entries read from PostgreSQL. NX: an entry written meanwhile is newer (the
    consent just changed) and is kept."""
    for key, value in fills:
        pipe.command("SET", key, value, "EX", CACHE_TTL, "NX")

CACHE_TTL = 300
OVERLAP = timedelta(seconds=5)  # a transaction's now() is its start, not its commit


def row_to_attrs(row: Any, today: date) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "tier": row.tier,
        "country": row.country,
        "consent": bool(row.consent),
        "segments": list(row.segments or []),
        "attributes": dict(row.attributes or {}),
    }
    if row.signup_date is not None:
        attrs["signup_days"] = (today - row.signup_date).days
    return attrs


def load_customers(engine: Engine, user_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Customers' attributes from PostgreSQL, as decisions read them (unknown ones as
    ``{}``): the one reader of the customers table, for the worker's cache and backtests."""
    if not user_ids:
        return {}
    today = datetime.now(UTC).date()
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT user_id, tier, country, consent, signup_date, segments, "
                 "attributes FROM customers WHERE user_id = ANY(:ids)"),
            {"ids": user_ids},
        ).all()
    found = {r.user_id: row_to_attrs(r, today) for r in rows}
    return {uid: found.get(uid, {}) for uid in user_ids}


class CustomerCache:
    def __init__(self, client: Any, engine: Engine) -> None:
        self.client = client
        self.engine = engine
        self._watermark: datetime | None = None

    def get_many(self, user_ids: list[str]) -> dict[str, dict[str, Any]]:
        out, fills = self.lookup(user_ids)
        if fills:
            pipe = RawPipeline(self.client)
            queue_fills(pipe, fills)
            pipe.execute()
        return out

    def lookup(self, user_ids: list[str],
               ) -> tuple[dict[str, dict[str, Any]], list[tuple[str, bytes]]]:
        """The users' attributes, and the cache entries to write for those read from
        PostgreSQL (``queue_fills``; the worker sends them with its batch's writes)."""
        unique = list(dict.fromkeys(user_ids))
        if not unique:
            return {}, []
        pipe = RawPipeline(self.client)
        pipe.command("MGET", *[keys.customer(u) for u in unique])
        pipe.command("MGET", *[keys.erased(u) for u in unique])
        cached, tombstones = pipe.execute()
        out: dict[str, dict[str, Any]] = {}
        missing = []
        for uid, raw in zip(unique, cached, strict=True):
            if raw is None:
                missing.append(uid)
            else:
                out[uid] = orjson.loads(raw)
        if not missing:
            return out, []
        loaded = self._load(missing)
        out.update(loaded)
        # an erased user's entry is not cached: their events from before the erasure are
        # dropped and must not bring a key back (later ones read PostgreSQL meanwhile)
        erased = {uid for uid, t in zip(unique, tombstones, strict=True) if t is not None}
        return out, [(keys.customer(uid), orjson.dumps(attrs)) for uid, attrs in loaded.items()
                     if uid not in erased]

    def _load(self, user_ids: list[str]) -> dict[str, dict[str, Any]]:
        return load_customers(self.engine, user_ids)

    def invalidate(self, user_id: str) -> None:
        self.client.delete(keys.customer(user_id))

    def invalidate_changed(self, limit: int = 10_000) -> int:
        """Drop cached entries of customers changed since the last call; returns how many."""
        with self.engine.connect() as conn:
            if self._watermark is None:
                self._watermark = conn.execute(text("SELECT now()")).scalar_one()
                return 0
            rows = conn.execute(
                text("SELECT user_id, updated_at FROM customers WHERE updated_at > :since "
                     "ORDER BY updated_at LIMIT :limit"),
                {"since": self._watermark - OVERLAP, "limit": limit},
            ).all()
        if not rows:
            return 0
        self.client.delete(*[keys.customer(r.user_id) for r in rows])
        newest = max(r.updated_at for r in rows)
        if newest > self._watermark:
            self._watermark = newest
        return len(rows)

    def set_consent(self, user_id: str, granted: bool) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text("INSERT INTO customers (user_id, consent, segments, attributes, updated_at) "
                     "VALUES (:u, :c, '{}', '{}', now()) ON CONFLICT (user_id) DO UPDATE "
                     "SET consent = :c, updated_at = now()"),
                {"u": user_id, "c": granted},
            )
        # re-cache at once (the API reads consent from the cache), overwriting whatever a
        # lookup may have read from the row as it was before (its fills are NX)
        self.client.set(keys.customer(user_id), orjson.dumps(self._load([user_id])[user_id]),
                        ex=CACHE_TTL)


SEEN_SAMPLE = 2_000  # the most recently updated customers the field picker looks at
_JSON_TYPES = {"number": "number", "string": "string", "boolean": "boolean"}


def seen_attributes(engine: Engine, sample: int = SEEN_SAMPLE) -> dict[str, str]:
    """The custom attributes the most recently updated customers carry, by name, with the
    type of their values (``number``, ``string``, ``boolean``; ``any`` when they differ):
    what the rule editor's field picker offers as ``customer.<name>``. A sample, so the
    picker stays quick on millions of customers (any other name can be typed in)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT a.key, jsonb_typeof(a.value) AS type FROM (SELECT attributes FROM "
                 "customers ORDER BY updated_at DESC LIMIT :n) c, jsonb_each(c.attributes) a "
                 "GROUP BY a.key, jsonb_typeof(a.value) ORDER BY a.key"),
            {"n": sample},
        ).all()
    out: dict[str, str] = {}
    for row in rows:
        kind = _JSON_TYPES.get(row.type)
        if kind is None:
            continue
        out[row.key] = kind if out.get(row.key, kind) == kind else "any"
    return out
