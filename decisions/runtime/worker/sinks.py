"""Where a batch's decisions go: Redis (what the API serves), the actions and dead-letter
topics (what other systems read), PostgreSQL (the event archive and the decision log)."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine, text

from decisions.core import keys, metrics
from decisions.core.events import Event
from decisions.core.resp.pipeline import RawPipeline
from decisions.core.settings import Settings
from decisions.runtime.actions import Effect
from decisions.runtime.archive import EventArchive
from decisions.runtime.budgets import OK, BudgetStore
from decisions.runtime.budgets import refusal as budget_refusal
from decisions.runtime.kafka import Producer
from decisions.runtime.offers import OfferStore, refusal
from decisions.runtime.worker.records import key_of

# a batch's decision rows travel as one JSON array (see EventArchive.write_batch)
_INSERT_DECISIONS = text(
    "INSERT INTO decisions (action_id, user_id, event_id, ruleset, ruleset_version, rule, kind,"
    " payload, reason, model_versions, decided_at, event_ts, trace_id) "
    "SELECT r.action_id, r.user_id, r.event_id, r.ruleset, r.ruleset_version, r.rule, r.kind,"
    " r.payload, r.reason, r.model_versions, now(), r.event_ts, r.trace_id "
    "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(action_id text, user_id text,"
    " event_id text, ruleset text, ruleset_version integer, rule text, kind text, payload jsonb,"
    " reason jsonb, model_versions jsonb, event_ts timestamptz, trace_id text) "
    # a replay in other batch boundaries may produce what the first run superseded: the
    # row then says produced (a row never claims superseded for a published action)
    "ON CONFLICT (action_id) DO UPDATE SET payload = EXCLUDED.payload"
    " WHERE decisions.payload -> 'superseded_by' IS NOT NULL"
    " AND EXCLUDED.payload -> 'superseded_by' IS NULL")


class DecisionLog:
    """PostgreSQL: the events of a batch and every decision taken on them."""

    def __init__(self, db: Engine) -> None:
        self.db = db
        self.archive = EventArchive(db)

    def write(self, events: list[Event], decision_rows: list[dict[str, Any]]) -> None:
        """Events and decisions of a batch, in one transaction (one connection checkout)."""
        if not events and not decision_rows:
            return
        with self.db.begin() as conn:
            self.archive.write_batch(events, conn)
            if decision_rows:
                if len({r["action_id"] for r in decision_rows}) < len(decision_rows):
                    # one statement may not update a row twice: the first of an id stays
                    # (two actions of one rule and kind share its id)
                    decision_rows = list({r["action_id"]: r for r in reversed(decision_rows)}
                                         .values())
                conn.execute(_INSERT_DECISIONS, {"rows": orjson.dumps(decision_rows).decode()})


def decision_row(effect: Effect, model_versions: dict[str, int],
                 trace_id: str | None = None) -> dict[str, Any]:
    """``trace_id``: of a traced event (tracing on); the column is NULL otherwise."""
    match = effect.match
    row = {
        "action_id": effect.action_id, "user_id": effect.user_id,
        "event_id": effect.event.event_id, "ruleset": match.ruleset,
        "ruleset_version": match.version, "rule": match.rule, "kind": effect.kind,
        "payload": effect.payload, "reason": match.reason, "model_versions": model_versions,
        "event_ts": effect.event.ts,
    }
    if trace_id is not None:
        row["trace_id"] = trace_id
    return row


class Effects:
    """Redis: the effects the storefront API reads (offers, recommendations, segments)."""

    def __init__(self, offers: OfferStore, ttl_seconds: int) -> None:
        self.offers = offers
        self.ttl = ttl_seconds
        self.budgets = BudgetStore(offers.client)

    def reserve(self, effects: list[Effect], now_ms: int) -> None:
        """Reserve the budgets of the offers that have some, before anything is stored or
        recorded: an offer a budget refuses is marked (recorded with why, not stored)."""
        budgeted = [e for e in effects if e.budgets and e.stored]
        if not budgeted:
            return
        replies = self._budget_calls(self.budgets.queue_reserve, budgeted, now_ms)
        for e, reply in zip(budgeted, replies, strict=True):
            text = reply.decode() if isinstance(reply, bytes) else str(reply)
            if text not in (OK, "again"):
                e.refused = e.payload["refused"] = budget_refusal(text, e.budgets)
                metrics.BUDGET_REFUSED.labels(e.match.ruleset, e.match.rule).inc()

    def mark_refused(self, stored: list[tuple[Any, Effect]], now_ms: int) -> None:
        """The offers the offer store refused (an active offer of the rule, a cap): each is
        marked with why (``payload.refused``: its decision row says so, it is not
        published), and its budget reservation is given back."""
        released = []
        for reply, e in stored:
            why = refusal(reply, e.payload, e.caps, self.offers.global_caps)
            if why:
                e.refused = e.payload["refused"] = why
                if e.budgets:
                    released.append(e)
        if released:
            self._budget_calls(self.budgets.queue_release, released, now_ms)

    def _budget_calls(self, queue: Any, effects: list[Effect], now_ms: int) -> list[Any]:
        """One pipeline of a budget script per offer (each call on its ruleset's slot)."""
        pipe = RawPipeline(self.offers.client)
        for e in effects:
            queue(pipe, e.match.ruleset, e.payload["offer_id"], e.cost, e.budgets, now_ms)
        return pipe.execute()

    def queue(self, pipe: RawPipeline, effect: Effect, now_ms: int) -> None:
        if effect.kind == "offer":
            self.offers.store_offer(pipe, effect.user_id, effect.payload, now_ms, self.ttl,
                                    effect.caps)
        elif effect.kind == "recommendation":
            self.offers.store_recommendation(pipe, effect.user_id, effect.payload["slot"],
                                             effect.payload, self.ttl)
        elif effect.kind == "segment":
            pipe.command("SADD", keys.segments(effect.user_id), effect.payload["segment"])


class Topics:
    """Kafka: every effect on the actions topic; refused records on the dead-letter topic,
    their original bytes with why and where from in headers."""

    def __init__(self, producer: Producer, settings: Settings) -> None:
        self.producer = producer
        self.actions_topic = settings.actions_topic
        self.dead_letter_topic = settings.dead_letter_topic

    def dead_letter(self, record: Any, reason: str, detail: str) -> None:
        self.producer.send(self.dead_letter_topic, key_of(record), record.value or b"",
                           headers=dead_letter_headers(record, reason, detail))
        metrics.DEAD_LETTERED.labels(reason).inc()

    def publish(self, effects: list[Effect], decided_at: str) -> None:
        for effect in effects:
            self.producer.send(self.actions_topic, effect.user_id,
                               action_message(effect, decided_at))


def dead_letter_headers(record: Any, reason: str, detail: str) -> list[tuple[str, bytes]]:
    """The dead letter's value is the original bytes; why and where from go in headers."""
    return [("dlq.reason", reason.encode()), ("dlq.detail", detail[:2000].encode()),
            ("dlq.topic", record.topic.encode()), ("dlq.partition", str(record.partition).encode()),
            ("dlq.offset", str(record.offset).encode())]


def action_message(effect: Effect, decided_at: str) -> dict[str, Any]:
    return {
        "action_id": effect.action_id, "kind": effect.kind, "user_id": effect.user_id,
        "event_id": effect.event.event_id, "ruleset": effect.match.ruleset,
        "ruleset_version": effect.match.version, "rule": effect.match.rule,
        "payload": effect.payload, "reason": effect.match.reason,
        "decided_at": decided_at,
    }
