"""'Try it': what a ruleset would decide for one event, with no side effect.

The user's state comes from their stored history: their archived events before the
event are replayed with the event itself through the worker's Lua state code under a
scratch key prefix (deleted right after), so the features are what the worker would
compute. A pasted profile (``state`` / ``customer`` / ``scores``) overrides them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import Engine, text

from admin.backtest import load_customers
from decisions.actions import Context, run_actions
from decisions.engine import RuleEngine, build_fact
from decisions.errors import FieldError, ValidationError
from decisions.events import Event, parse_event
from decisions.state import clear_scratch, replay
from rulesets.compile import compile_ruleset, fact_key

HISTORY_LIMIT = 20_000
SAMPLE_EVENT = {"event_id": "try-1", "type": "add_to_cart", "user_id": "u-try",
                "properties": {"product_id": "p-1", "price": 250.0, "quantity": 1}}
SAMPLE_PROFILE = {"state": {"cart_value": 250, "since_page_checkout": 60},
                  "customer": {"tier": "gold"}}


@dataclass
class Inputs:
    event: Event
    state: dict[str, Any] = field(default_factory=dict)
    customer: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    history_events: int = 0


def parse_inputs(event_data: Any, profile: Any, now: datetime) -> tuple[Event, dict[str, Any]]:
    """Validate the pasted event (its time set to ``now``) and profile."""
    if not isinstance(event_data, dict):
        raise ValidationError("invalid event", [FieldError("event", "expected a JSON object")])
    data = dict(event_data)
    data.setdefault("event_id", "try-" + uuid.uuid4().hex[:8])
    data["ts"] = now.isoformat().replace("+00:00", "Z")
    try:
        event = parse_event(data, internal=True)
    except ValidationError as exc:
        raise ValidationError("invalid event", [
            FieldError(f"event.{d.field}" if d.field else "event", d.message)
            for d in exc.details]) from None
    if profile is None:
        profile = {}
    if not isinstance(profile, dict):
        raise ValidationError("invalid profile",
                              [FieldError("profile", "expected a JSON object")])
    known = {"state", "customer", "scores"}
    if profile and not known & set(profile):
        profile = {"state": profile}  # a bare object is taken as state features
    for key in profile:
        if key not in known:
            raise ValidationError("invalid profile", [FieldError(
                f"profile.{key}", "unknown key (expected state, customer, scores)")])
        if not isinstance(profile[key], dict):
            raise ValidationError("invalid profile", [FieldError(
                f"profile.{key}", "expected a JSON object")])
    return event, profile


def user_history(db: Engine, user_id: str, before: datetime) -> list[Event]:
    with db.connect() as conn:
        rows = conn.execute(text(
            "SELECT event_id, type, user_id, ts, properties FROM events "
            "WHERE user_id = :u AND ts < :t ORDER BY ts DESC, event_id DESC LIMIT :n"),
            {"u": user_id, "t": before, "n": HISTORY_LIMIT}).all()
    return [Event(r.event_id, r.type, r.user_id, r.ts, r.properties or {})
            for r in reversed(rows)]


def gather(db: Engine, client: redis.Redis, event: Event, profile: dict[str, Any],
           use_history: bool) -> Inputs:
    """The state as of ``event`` (replayed on scratch keys), customer and scores."""
    inputs = Inputs(event)
    history = user_history(db, event.user_id, event.ts) if use_history else []
    inputs.history_events = len(history)
    prefix = "try-" + uuid.uuid4().hex[:12] + "-"
    try:
        snapshot: dict[str, Any] = {}
        for _, snap in replay([*history, event], client, prefix):
            snapshot = snap
    finally:
        clear_scratch(client, prefix)
    inputs.state = {**snapshot, **profile.get("state", {})}
    if use_history:
        inputs.customer = load_customers(db, [event.user_id]).get(event.user_id, {})
    inputs.customer = {**inputs.customer, **profile.get("customer", {})}
    inputs.scores = dict(profile.get("scores", {}))
    return inputs


@dataclass
class RuleOutcome:
    rule: str
    priority: int
    enabled: bool
    fired: bool
    values: dict[str, Any]  # what each field the rule reads held (the "why")
    effects: list[dict[str, Any]] = field(default_factory=list)  # would-be offers etc.


def decide(engine: RuleEngine, document: dict[str, Any], inputs: Inputs,
           now: datetime) -> list[RuleOutcome]:
    """Evaluate a validated ruleset on one event; the caller holds the engine lock."""
    compiled = compile_ruleset(document, 0)
    fact = build_fact(inputs.event, inputs.state, inputs.customer, inputs.scores)
    matches = {m.rule: m for m in engine.evaluate(compiled, inputs.event, fact)}
    out = []
    for rule in document["rules"]:
        name = rule["name"]
        compiled_rule = compiled.rules.get(name)
        paths = compiled_rule.fields if compiled_rule else []
        match = matches.get(name)
        outcome = RuleOutcome(name, int(rule.get("priority", 0)), bool(rule.get("enabled", True)),
                              match is not None,
                              match.reason if match else {p: fact.get(fact_key(p)) for p in paths})
        if match is not None:
            ctx = Context(inputs.event, inputs.state, match, compiled.stacking, None)
            outcome.effects = [{**e.payload, "kind": e.kind} for e in run_actions(ctx)]
        out.append(outcome)
    out.sort(key=lambda o: (not o.fired, -o.priority, o.rule))
    return out
