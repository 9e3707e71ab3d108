"""Dry run with time travel: what a ruleset would decide for one event, with no side effect.

``dry_run(document_or_compiled, event, state=..., customer=..., scores=..., now=...)``
evaluates a version (a draft document or a compiled published version) with the same
durable_rules engine and the same action handlers the worker uses, and returns which
rules fire and why, the offers, recommendations and segments they would produce, and the
offers the user would be shown after priority and stacking. Nothing is written to Redis
or PostgreSQL. It is the building block of the admin's "try it" panel and of backtests.
``dry_run_live`` does the same on a user's live profile read from Redis.

Time travel: ``now`` is the moment the event is taken to happen. Its timestamp, the
rules' active windows, ``time.hour`` / ``time.weekday``, and every state value given as
a timestamp (``first_seen_at``, ``last_purchase_at``, ``last_<type>_at``,
``last_page_<page>_at``, ``session_start_at``, ``product_viewed_at``, and the
``timeline`` of event times per type) are measured from ``now``. See docs/rules.md.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import redis

from decisions.core import keys
from decisions.core.errors import FieldError, ValidationError
from decisions.core.events import Event, format_ts, parse_event, parse_time, parse_ts
from decisions.runtime.actions import Effect
from decisions.runtime.budgets import would_refuse
from decisions.runtime.customer_records import NAME as CUSTOM_ATTRIBUTE
from decisions.runtime.decide import Decider, Evaluation
from decisions.runtime.engine import Match, RuleEngine
from decisions.runtime.offers import select_offers
from rulesets.compile import CompiledRuleset, compile_ruleset, digest
from rulesets.explain import explain
from rulesets.facts import build_fact, readable
from rulesets.language import BOOL, FIELDS, LIST, NUMBER, STATE_TYPES, WINDOWS, field_type, windowed
from rulesets.validate import validate

DRAFT = 0  # the version number a draft is compiled under
_WINDOW_MS = {"5m": 300_000, "1h": 3_600_000, "24h": 86_400_000, "30d": 30 * 86_400_000}
_DAY_S = 86_400.0
CUSTOMER_KEYS: dict[str, Any] = {
    "tier": str, "country": str, "consent": bool, "signup_days": (int, float),
    "signup_date": (str, date), "segments": list, "attributes": dict,
}


@dataclass(frozen=True)
class RuleTrace:
    """One rule of the ruleset in this dry run: did it fire, and each condition's result."""

    rule: str
    priority: int
    enabled: bool
    fired: bool
    event_type_ok: bool  # the rule listens to this event type
    in_window: bool  # ``now`` is inside the rule's active window
    conditions: dict[str, Any] | None  # explain() tree: result per node, actual per leaf
    actions: list[dict[str, Any]]


@dataclass(frozen=True)
class DryRunResult:
    ruleset: str
    version: int | None  # None: a draft
    now: datetime
    event: dict[str, Any]
    fact: dict[str, Any]  # every value the rules could read, by field path
    matches: list[Match]  # the rules that fired, highest priority first, with reasons
    effects: list[Effect]  # what their actions would store
    offers: list[dict[str, Any]]  # the offers the user would be shown (priority, stacking)
    rules: list[RuleTrace] = field(default_factory=list)
    withheld: str = ""  # why no rule was evaluated (e.g. "consent withdrawn")
    # rule -> {"experiments": {experiment: group}, "held_out": why or ""} for the rules
    # that fired under a holdout (a held-out rule's effects are not in ``effects``)
    holdouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    # rule -> {"campaigns": [...], "cost": money, "refused": why or ""} for the offers of
    # rules under a budget (a refused offer is not in ``effects`` nor ``offers``)
    budgets: dict[str, dict[str, Any]] = field(default_factory=dict)
    # rule -> why the shopper's live offers and caps would refuse its offer (Try it on a
    # shopper; a refused offer is not in ``effects`` nor ``offers``)
    capped: dict[str, str] = field(default_factory=dict)

    @property
    def fired(self) -> list[str]:
        return [m.rule for m in self.matches]

    @property
    def recommendations(self) -> list[dict[str, Any]]:
        return [e.payload for e in self.effects if e.kind == "recommendation"]

    @property
    def segments(self) -> list[str]:
        return [str(e.payload["segment"]) for e in self.effects if e.kind == "segment"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the admin's "try it" panel renders this)."""
        return {
            "ruleset": self.ruleset, "version": self.version, "now": format_ts(self.now),
            "event": self.event, "fact": self.fact,
            "fired": [{"rule": m.rule, "priority": m.priority, "reason": m.reason,
                       "actions": m.actions} for m in self.matches],
            "effects": [{"kind": e.kind, "rule": e.match.rule, "payload": e.payload}
                        for e in self.effects],
            "offers": self.offers, "recommendations": self.recommendations,
            "segments": self.segments, "withheld": self.withheld,
            "holdouts": self.holdouts, "budgets": self.budgets,
            "rules": [{"rule": t.rule, "priority": t.priority, "enabled": t.enabled,
                       "fired": t.fired, "event_type_ok": t.event_type_ok,
                       "in_window": t.in_window, "conditions": t.conditions,
                       "actions": t.actions} for t in self.rules],
        }


# -- the engine and compiled forms used by dry runs (one per process, behind a lock) ------
_LOCK = threading.Lock()
_ENGINE: RuleEngine | None = None
_COMPILED: OrderedDict[tuple[str, int], CompiledRuleset] = OrderedDict()
_CACHE_SIZE = 64


def _compiled(document: Mapping[str, Any], version: int) -> tuple[CompiledRuleset, dict[str, Any]]:
    doc = validate(dict(document))
    key = (digest(doc), version)
    with _LOCK:
        hit = _COMPILED.get(key)
        if hit is not None:
            _COMPILED.move_to_end(key)
            return hit, doc
    compiled = compile_ruleset(doc, version)
    with _LOCK:
        _COMPILED[key] = compiled
        while len(_COMPILED) > _CACHE_SIZE:
            _, dropped = _COMPILED.popitem(last=False)
            if _ENGINE is not None:  # free its durable_rules rulesets too
                _ENGINE.unload(dropped)
    return compiled, doc


def _evaluate(compiled: CompiledRuleset, event: Event, snapshot: dict[str, Any],
              customer: dict[str, Any], scores: dict[str, float]) -> Evaluation:
    """The worker's decision step (``decisions.runtime.decide``) on the given inputs."""
    global _ENGINE
    with _LOCK:  # the durable_rules C core has no locks of its own
        if _ENGINE is None:
            _ENGINE = RuleEngine()
        return Decider(_ENGINE).evaluate(event, snapshot, customer, [compiled],
                                         scores=(scores, {}))


# -- inputs --------------------------------------------------------------------------------
def _time(value: Any, path: str, errors: list[FieldError]) -> datetime | None:
    if isinstance(value, datetime):
        return parse_time(value)
    if isinstance(value, str):
        try:
            return parse_ts(value)
        except ValueError:
            pass
    errors.append(FieldError(path, f"expected an ISO 8601 timestamp with timezone, got {value!r}"))
    return None


def blank_state() -> dict[str, Any]:
    """The features of a user never seen before (what state.lua returns for one)."""
    out: dict[str, Any] = {}
    for path, f in FIELDS.items():
        source, _, name = path.partition(".")
        if source != "state" or name.startswith("since_page_"):
            continue
        scoped = windowed(name)
        if name == "since_same_product_view" or (scoped and scoped.kind == "since"):
            continue  # recency of a product / category / page: missing when never
        if f.type == LIST:
            out[name] = []
        elif f.type == BOOL:  # first_visit_ever: a user never seen is on their first visit
            out[name] = True
        elif name.startswith("since_") or name == "days_since_last_purchase":
            out[name] = -1
        else:
            out[name] = 0
    out["visit_count"] = 1
    out["segments"] = []
    return out


def state_at(state: Mapping[str, Any] | None, now: datetime) -> dict[str, Any]:
    """A full snapshot from partial ``state``: blank defaults, then values derived from
    timestamps relative to ``now``, then the values given explicitly."""
    errors: list[FieldError] = []
    snap = blank_state()
    given = dict(state or {})
    now_s = now.timestamp()

    def ago(value: Any, path: str) -> float | None:
        t = _time(value, path, errors)
        if t is None or t.timestamp() > now_s:  # later than now: has not happened yet
            return None
        return now_s - t.timestamp()

    timeline = given.pop("timeline", None)
    if timeline is not None:
        if not isinstance(timeline, dict):
            errors.append(FieldError("state.timeline", "expected {event type: [timestamps]}"))
            timeline = {}
        for etype, times in timeline.items():
            where = f"state.timeline.{etype}"
            if etype not in STATE_TYPES:
                errors.append(FieldError(where, f"unknown event type {etype!r}"))
                continue
            if not isinstance(times, list):
                errors.append(FieldError(where, "expected a list of timestamps"))
                continue
            past = [s for i, v in enumerate(times)
                    if (s := ago(v, f"{where}[{i}]")) is not None]
            for window in WINDOWS:
                snap[f"count_{etype}_{window}"] = sum(
                    1 for s in past if s * 1000 <= _WINDOW_MS[window])
            snap[f"since_{etype}"] = min(past) if past else -1
    for key in [k for k in given if k.endswith("_at")]:
        value = given.pop(key)
        seconds = ago(value, f"state.{key}")
        name = key[:-3]
        if name == "first_seen":
            snap["days_since_first_seen"] = (seconds or 0.0) / _DAY_S
        elif name == "last_purchase":
            snap["days_since_last_purchase"] = -1 if seconds is None else seconds / _DAY_S
        elif name == "session_start":
            snap["session_seconds"] = seconds or 0.0
        elif name == "product_viewed":
            if seconds is not None:
                snap["since_same_product_view"] = seconds
        elif name.startswith("last_page_"):
            if seconds is not None:
                snap[f"since_page_{name[10:]}"] = seconds
        elif name.startswith("last_") and name[5:] in STATE_TYPES:
            snap[f"since_{name[5:]}"] = -1 if seconds is None else seconds
        else:
            errors.append(FieldError(f"state.{key}", "unknown timestamp (see docs/rules.md)"))
    for key, value in given.items():
        where = f"state.{key}"
        ftype = LIST if key == "segments" else field_type(f"state.{key}")
        if ftype is None and key.startswith("since_page_"):
            ftype = NUMBER  # any page name the storefront sends (live profiles)
        if ftype is None:
            errors.append(FieldError(where, "unknown state feature"))
        elif ftype == NUMBER and (isinstance(value, bool) or not isinstance(value, int | float)):
            errors.append(FieldError(where, f"expected a number, got {value!r}"))
        elif ftype == BOOL and not isinstance(value, bool):
            errors.append(FieldError(where, f"expected true or false, got {value!r}"))
        elif ftype == LIST and not (isinstance(value, list)
                                     and all(isinstance(v, str) for v in value)):
            errors.append(FieldError(where, "expected a list of strings"))
        else:
            snap[key] = value
    if errors:
        raise ValidationError("invalid dry-run state", errors)
    return snap


def customer_at(customer: Mapping[str, Any] | None, now: datetime) -> dict[str, Any]:
    errors: list[FieldError] = []
    out: dict[str, Any] = {}
    for key, value in (customer or {}).items():
        where = f"customer.{key}"
        kinds = CUSTOMER_KEYS.get(key)
        if kinds is None and isinstance(key, str) and CUSTOM_ATTRIBUTE.match(key) \
                and isinstance(value, str | int | float | bool):
            # a custom attribute by name, flat as the customer import and API write it
            out.setdefault("attributes", {})[key] = value
        elif kinds is None:
            errors.append(FieldError(where, "unknown customer attribute (expected one of "
                                     f"{', '.join(CUSTOMER_KEYS)}, or a custom attribute "
                                     "such as lifetime_value with a number, text or "
                                     "true/false)"))
        elif value is None:
            continue
        elif not isinstance(value, kinds) or (isinstance(value, bool) and kinds is not bool):
            errors.append(FieldError(where, f"unexpected value {value!r}"))
        elif key == "signup_date":
            try:
                day = value if isinstance(value, date) else date.fromisoformat(value[:10])
            except ValueError:
                errors.append(FieldError(where, f"expected a date (YYYY-MM-DD), got {value!r}"))
                continue
            if isinstance(day, datetime):
                day = day.date()
            out.setdefault("signup_days", (now.date() - day).days)
        elif key == "attributes":
            out["attributes"] = {**value, **out.get("attributes", {})}
        else:
            out[key] = value
    if errors:
        raise ValidationError("invalid dry-run customer", errors)
    return out


def _scores(scores: Mapping[str, Any] | None) -> dict[str, float]:
    errors = []
    out: dict[str, float] = {}
    for name, value in (scores or {}).items():
        where = f"scores.{name}"
        if field_type(f"score.{name}") is None:
            errors.append(FieldError(where, "not a model name (lowercase letters, digits, _)"))
        elif isinstance(value, bool) or not isinstance(value, int | float):
            errors.append(FieldError(where, f"expected a number, got {value!r}"))
        else:
            out[name] = float(value)
    if errors:
        raise ValidationError("invalid dry-run scores", errors)
    return out


def _event(event: Mapping[str, Any], now: datetime | None) -> tuple[Event, datetime]:
    if not isinstance(event, Mapping):
        raise ValidationError("invalid dry-run event", [FieldError("event", "expected an object")])
    data = {"event_id": "dry-run", "user_id": "dry-run", **event}
    if now is not None:
        data["ts"] = format_ts(parse_time(now))
    elif "ts" not in event:
        data["ts"] = format_ts(datetime.now(UTC))
    parsed = parse_event(data, prefix="event.", internal=True)
    return parsed, parsed.ts


# -- the dry run ---------------------------------------------------------------------------
def dry_run(
    document_or_compiled: Mapping[str, Any] | CompiledRuleset,
    event: Mapping[str, Any],
    *,
    state: Mapping[str, Any] | None = None,
    customer: Mapping[str, Any] | None = None,
    scores: Mapping[str, Any] | None = None,
    now: datetime | None = None,
    budgets_spent: Mapping[str, int] | None = None,
) -> DryRunResult:
    """Evaluate one event as if it happened at ``now`` (default: the event's ``ts``, else
    the current time). A document is validated and compiled as a draft (version None in
    the result); a ``CompiledRuleset`` keeps its version. Raises ``ValidationError`` naming
    the bad input by path (``event.properties.price``, ``state.cart_vlue``).

    Budgets: an offer that would take a budget past its limit is refused, as the worker
    would; ``budgets_spent`` is what is spent already (``BudgetStore.spent``; default
    nothing). Nothing is reserved."""
    document: dict[str, Any] | None = None
    if isinstance(document_or_compiled, CompiledRuleset):
        compiled = document_or_compiled
    else:
        compiled, document = _compiled(document_or_compiled, DRAFT)
    ev, at = _event(event, now)
    snapshot = state_at(state, at)
    attrs, values = customer_at(customer, at), _scores(scores)
    evaluation = _evaluate(compiled, ev, snapshot, attrs, values)
    # a withheld decision (consent withdrawn) still shows what each rule would have read
    fact = evaluation.fact or build_fact(ev, snapshot, attrs, values)
    matches = [f.match for f in evaluation.fired]
    effects = [e for e in Decider.act(evaluation.fired, None) if e.stored]
    budgets: dict[str, dict[str, Any]] = {}
    for e in effects:
        if e.kind == "offer" and e.budgets:
            why = would_refuse(e.budgets, budgets_spent or {}, e.cost)
            budgets[e.match.rule] = {"campaigns": [b.campaign for b in e.budgets],
                                     "cost": e.cost / 100, "refused": why}
            if why:
                e.refused = e.payload["refused"] = why
    effects = [e for e in effects if e.stored]
    holdouts = {f.match.rule: {"experiments": f.experiments, "held_out": f.held_out}
                for f in evaluation.fired if f.experiments is not None}
    offers = select_offers([dict(e.payload) for e in effects if e.kind == "offer"], at)
    fired = {m.rule for m in matches}
    return DryRunResult(
        ruleset=compiled.name,
        version=None if document is not None or compiled.version == DRAFT else compiled.version,
        now=at, event=ev.to_dict(), fact=readable(fact), matches=matches, effects=effects,
        offers=offers, rules=_traces(compiled, document, ev, fact, fired),
        withheld=evaluation.withheld, holdouts=holdouts, budgets=budgets,
    )


def _in_window(active: Mapping[str, Any], at: datetime) -> bool:
    start, until = active.get("from"), active.get("until")
    if start and at < parse_time(str(start)):
        return False
    return not (until and at >= parse_time(str(until)))


def _traces(compiled: CompiledRuleset, document: dict[str, Any] | None, event: Event,
            fact: dict[str, Any], fired: set[str]) -> list[RuleTrace]:
    traces = []
    for rule in compiled.rules.values():
        traces.append(RuleTrace(
            rule.name, rule.priority, True, rule.name in fired, event.type in rule.event_types,
            _in_window(rule.active, event.ts), explain(rule.when, fact), rule.actions))
    for rule in (document or {}).get("rules", []):
        if not rule.get("enabled", True):
            traces.append(RuleTrace(rule["name"], int(rule.get("priority", 0)), False, False,
                                    False, _in_window(rule.get("active") or {}, event.ts),
                                    explain(rule["when"], fact), list(rule["then"])))
    traces.sort(key=lambda t: (-t.priority, t.rule))
    return traces


# -- the same on a user's live profile -----------------------------------------------------
SCRATCH_TTL_MS = 60_000


def condition_fields(document_or_compiled: Mapping[str, Any] | CompiledRuleset) -> list[str]:
    """The field paths a ruleset's conditions read (a draft need not be valid)."""
    if isinstance(document_or_compiled, CompiledRuleset):
        return [p for rule in document_or_compiled.rules.values() for p in rule.fields]
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("field"), str):
                out.append(node["field"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for rule in document_or_compiled.get("rules") or []:
        walk(rule.get("when") if isinstance(rule, dict) else None)
    return out


def live_state(client: redis.Redis, user_id: str, event: Event,
               fields: Iterable[str] = ()) -> dict[str, Any]:
    """The snapshot the worker would compute for ``event`` on the user's current profile,
    with the counts and recency per product / category / page that ``fields`` read.

    The profile is read, never changed: its keys are copied (DUMP/RESTORE) under a scratch
    user id, the event is applied there by the worker's own Lua script, and the scratch
    keys are deleted (they also expire within a minute if this process dies meanwhile).
    """
    from decisions.runtime.state import StateStore, replay_features

    scratch_id = f"dry-run-{uuid.uuid4().hex}"
    pages = [p.decode() for p in client.smembers(keys.pages(user_id))]  # type: ignore[union-attr]
    names = _profile_keys(user_id, pages)
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.dump(name)
    dumps = pipe.execute()
    copies = _profile_keys(scratch_id, pages)
    try:
        pipe = client.pipeline(transaction=False)
        for dst_name, raw in zip(copies, dumps, strict=True):
            if raw is not None:
                pipe.restore(dst_name, SCRATCH_TTL_MS, raw, replace=True)
        pipe.execute()
        scratch = Event(event.event_id, event.type, scratch_id, event.ts, event.properties)
        store = StateStore(client, dedup_ttl_seconds=60)
        store.wanted = replay_features(fields)
        applied = store.apply_batch([scratch])[0]
        return dict(applied.snapshot)
    finally:
        touched = {str(event.properties.get("page")), *pages}
        client.delete(*{*copies, *_profile_keys(scratch_id, touched, [event.type]),
                        keys.seen(scratch_id, event.event_id)})


def _profile_keys(user_id: str, pages: Iterable[str],
                  types: Iterable[str] = ()) -> list[str]:
    """The keys of a user's profile the state script reads (timelines of every state type,
    and of ``types``), in a fixed order."""
    return ([key(user_id) for key in keys.PROFILE]
            + [keys.timeline(user_id, t) for t in dict.fromkeys((*STATE_TYPES, *types))]
            + [keys.page_views(user_id, p) for p in pages])


def dry_run_live(
    client: redis.Redis,
    user_id: str,
    document_or_compiled: Mapping[str, Any] | CompiledRuleset,
    event: Mapping[str, Any],
    *,
    customer: Mapping[str, Any] | None = None,
    scores: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> DryRunResult:
    """``dry_run`` on the user's live state in Redis, read-only (see ``live_state``)."""
    ev, _ = _event({**event, "user_id": user_id}, now)
    snapshot = live_state(client, user_id, ev, condition_fields(document_or_compiled))
    return dry_run(document_or_compiled, ev.to_dict(), state=snapshot, customer=customer,
                   scores=scores)
