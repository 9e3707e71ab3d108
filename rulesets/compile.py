"""Compile a validated ruleset document into durable_rules definitions.

Each event is evaluated as one *fact* (event + user state + customer + scores), asserted
and retracted under one bounded session id, so every matching rule fires and nothing
temporal lives in the engine (see DESIGN.md). Rules are indexed by the event types they
can match: durable_rules rulesets per event type, so cost grows with the rules that could
fire for an event, not with the whole ruleset; a top-level condition on ``event.type`` is
then left out of the compiled match (the index already decided it). Only the fact keys an
event type's rules read are posted.

durable_rules' matcher overflows (error 303) when about 64 alternatives are pending at
once, so each event type's rules are packed into rulesets of at most ``CHUNK_PATHS``
alternatives (``any`` and ``in`` expand into alternatives; a rule expanding into more than
``MAX_PATHS`` is evaluated as one Python check instead).

Operators durable_rules lacks (contains, prefix, membership in lists, negations of
those) become *derived predicates*: small Python checks computed into the fact as 0/1
before it is asserted. ``not`` is pushed down to the leaves (De Morgan).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rulesets.language import EVENT_TYPE_CHOICES, LIST, field_type

Predicate = Callable[[dict[str, Any]], bool]
NEGATE = {"eq": "ne", "ne": "eq", "gt": "lte", "gte": "lt", "lt": "gte", "lte": "gt",
          "in": "not_in", "not_in": "in"}
DURABLE_OP = {"gt": "$gt", "gte": "$gte", "lt": "$lt", "lte": "$lte", "ne": "$neq"}


def fact_key(path: str) -> str:
    """``state.cart_value`` -> ``s_cart_value`` (durable_rules matches top-level names)."""
    source, _, name = path.partition(".")
    return {"event": "e_", "state": "s_", "customer": "c_", "user": "u_", "score": "sc_",
            "time": "t_"}[source] + name


@dataclass
class CompiledRule:
    name: str
    priority: int
    actions: list[dict[str, Any]]
    fields: list[str]  # field paths the conditions read, for "why"
    event_types: tuple[str, ...]
    timers: list[str] = field(default_factory=list)  # timer events the rule waits for
    when: dict[str, Any] = field(default_factory=dict)  # the source conditions (explain)
    active: dict[str, str] = field(default_factory=dict)  # active window: from / until
    derived: list[str] = field(default_factory=list)  # derived predicates it reads

    def __post_init__(self) -> None:
        self.reads = tuple((path, fact_key(path)) for path in self.fields)  # for reasons


@dataclass
class CompiledRuleset:
    name: str
    version: int
    stacking: bool
    digest: str
    rules: dict[str, CompiledRule]
    # event type -> durable_rules ruleset definitions (chunks of at most CHUNK_PATHS)
    by_type: dict[str, list[dict[str, Any]]]
    derived: dict[str, Predicate] = field(default_factory=dict)
    # event type -> the derived predicates its rules read (only those are computed)
    derived_by_type: dict[str, dict[str, Predicate]] = field(default_factory=dict)
    # event type -> the fact keys its rules read (only those are posted)
    reads_by_type: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # event type -> per chunk, the span (ms) its rules' active windows cover
    spans_by_type: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    # event type -> per chunk, the fact keys and derived predicates its rules read
    chunk_reads: dict[str, list[tuple[str, ...]]] = field(default_factory=dict)
    chunk_derived: dict[str, list[dict[str, Predicate]]] = field(default_factory=dict)

    def durable_name(self, event_type: str, chunk: int = 0) -> str:
        name = f"{self.name}--v{self.version}--{self.digest[:8]}--{event_type}"
        return f"{name}--{chunk}" if chunk else name


def digest(document: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


class _Compiler:
    def __init__(self) -> None:
        self.derived: dict[str, Predicate] = {}
        self.fields: list[str] = []
        self.timers: list[str] = []
        self.used: list[str] = []  # derived predicates of the rule being compiled

    def node(self, node: dict[str, Any], negate: bool = False) -> dict[str, Any]:
        if "all" in node or "any" in node:
            kind = "all" if "all" in node else "any"
            parts = [self.node(child, negate) for child in node[kind]]
            conj = (kind == "all") != negate
            if len(parts) == 1:
                return parts[0]
            return {"$and": parts} if conj else {"$or": parts}
        if "not" in node:
            return self.node(node["not"], not negate)
        return self.leaf(node["field"], node["op"], node.get("value"), negate)

    def leaf(self, path: str, op: str, value: Any, negate: bool) -> dict[str, Any]:
        if path not in self.fields:
            self.fields.append(path)
        if path == "event.timer" and op in ("eq", "in") and not negate:
            self.timers.extend(value if isinstance(value, list) else [value])
        key = fact_key(path)
        if op == "between":
            lo, hi = value
            inner = {"$and": [{"$gte": {key: lo}}, {"$lte": {key: hi}}]}
            return {"$or": [{"$lt": {key: lo}}, {"$gt": {key: hi}}]} if negate else inner
        if op == "within":
            if negate:
                return {"$or": [{"$lt": {key: 0}}, {"$gt": {key: value}}]}
            return {"$and": [{"$gte": {key: 0}}, {"$lte": {key: value}}]}
        if op == "exists":
            # durable_rules' $nex loops forever when it matches: derive "missing" instead
            return self.derive(key, op, value, negate) if negate else {"$ex": {key: 1}}
        if negate and op in NEGATE:
            op = NEGATE[op]
            negate = False
        if op == "eq":
            return {key: value}
        if op in DURABLE_OP:
            return {DURABLE_OP[op]: {key: value}}
        if op in ("in", "not_in") and field_type(path) != LIST:
            alts: list[dict[str, Any]] = [{key: v} for v in value]
            if op == "in":
                return alts[0] if len(alts) == 1 else {"$or": alts}
            nots: list[dict[str, Any]] = [{"$neq": {key: v}} for v in value]
            return nots[0] if len(nots) == 1 else {"$and": nots}
        return self.derive(key, op, value, negate)

    def derive(self, key: str, op: str, value: Any, negate: bool) -> dict[str, Any]:
        name = "x_" + hashlib.sha1(  # noqa: S324 - a name, not security
            json.dumps([key, op, value, negate]).encode()
        ).hexdigest()[:12]

        def check(fact: dict[str, Any]) -> bool:
            got = fact.get(key)
            if op == "exists":
                return (got is not None) != negate
            if got is None:  # a missing value never matches, negated or not
                return False
            if op == "contains":
                ok = value in got if isinstance(got, list | str) else False
            elif op == "prefix":
                ok = isinstance(got, str) and got.startswith(value)
            else:
                ok = False
            return ok != negate

        self.derived[name] = check
        if name not in self.used:
            self.used.append(name)
        return {name: 1}


def _event_types(when: dict[str, Any]) -> tuple[str, ...]:
    """The event types a rule can match, read from top-level conditions on event.type."""
    conds = when["all"] if "all" in when else [when]
    types = set(EVENT_TYPE_CHOICES)
    for cond in conds:
        if cond.get("field") == "event.type":
            if cond["op"] == "eq":
                types &= {cond["value"]}
            elif cond["op"] == "in":
                types &= set(cond["value"])
            elif cond["op"] in ("ne", "not_in"):
                excluded = cond["value"] if isinstance(cond["value"], list) else [cond["value"]]
                types -= set(excluded)
    return tuple(sorted(types))


def _epoch_ms(value: str) -> int:
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


MAX_PATHS = 8  # a condition expanding to more alternatives is evaluated in Python instead
CHUNK_PATHS = 32  # alternatives per durable_rules ruleset: its matcher overflows near 64


def _paths(cond: dict[str, Any]) -> int:
    """How many alternatives durable_rules expands a condition into (its DNF size)."""
    if "$or" in cond:
        return sum(_paths(c) for c in cond["$or"])
    if "$and" in cond:
        return math.prod(_paths(c) for c in cond["$and"])
    return 1


def _keys(cond: dict[str, Any]) -> set[str]:
    """The fact keys a compiled condition reads."""
    out: set[str] = set()
    for key, value in cond.items():
        if key in ("$and", "$or"):
            for part in value:
                out |= _keys(part)
        elif key.startswith("$"):
            out |= set(value)
        else:
            out.add(key)
    return out


def _indexed(cond: dict[str, Any]) -> bool:
    """A top-level event.type condition: rules are already indexed by event type."""
    return cond.get("field") == "event.type" and cond.get("op") in ("eq", "in")


def _whole(when: dict[str, Any]) -> Predicate:
    from rulesets.explain import holds  # explain reads fact_key from here

    def check(fact: dict[str, Any]) -> bool:
        return holds(when, fact)

    return check


def compile_ruleset(document: dict[str, Any], version: int) -> CompiledRuleset:
    """``document`` must have passed ``rulesets.validate.validate``."""
    compiler = _Compiler()
    rules: dict[str, CompiledRule] = {}
    pending: dict[str, list[tuple[str, dict[str, Any], int, float, float, list[str],
                                  list[str]]]] = {}
    derived_by_type: dict[str, dict[str, Predicate]] = {}
    reads_by_type: dict[str, set[str]] = {}
    for rule in document["rules"]:
        if not rule.get("enabled", True):
            continue
        compiler.fields = []
        compiler.timers = []
        compiler.used = []
        when = rule["when"]
        top = when["all"] if "all" in when else [when]
        rest = [c for c in top if not _indexed(c)]
        if rest and len(rest) < len(top):  # the index decides event.type: leave it out
            compiler.fields.append("event.type")
            cond = compiler.node({"all": rest})
        else:
            cond = compiler.node(when)
        weight = _paths(cond)
        if weight > MAX_PATHS:  # too many alternatives for durable_rules: one Python check
            name = "x_rule_" + hashlib.sha1(  # noqa: S324 - a name, not security
                json.dumps(when, sort_keys=True).encode()).hexdigest()[:12]
            compiler.derived[name] = _whole(when)
            compiler.used = [name]
            cond, weight = {name: 1}, 1
        parts = cond["$and"] if "$and" in cond else [cond]
        active = rule.get("active") or {}
        # the active window first: rules out of season stop at their first (shared) node
        if active.get("until"):
            parts = [{"$lt": {"ts_ms": _epoch_ms(active["until"])}}, *parts]
        if active.get("from"):
            parts = [{"$gte": {"ts_ms": _epoch_ms(active["from"])}}, *parts]
        match = parts[0] if len(parts) == 1 else {"$and": parts}
        reads = sorted(_keys(match) - set(compiler.derived))
        types = _event_types(when)
        rules[rule["name"]] = CompiledRule(
            rule["name"], int(rule.get("priority", 0)), list(rule["then"]),
            list(compiler.fields), types, list(compiler.timers), when,
            {k: str(v) for k, v in active.items() if v}, list(compiler.used),
        )
        lo = _epoch_ms(active["from"]) if active.get("from") else -math.inf
        hi = _epoch_ms(active["until"]) if active.get("until") else math.inf
        for etype in types:
            pending.setdefault(etype, []).append(
                (rule["name"], match, weight, lo, hi, reads, list(compiler.used)))
            wanted = derived_by_type.setdefault(etype, {})
            for name in compiler.used:
                wanted[name] = compiler.derived[name]
            reads_by_type.setdefault(etype, set()).update(reads)
    by_type: dict[str, list[dict[str, Any]]] = {}
    spans_by_type: dict[str, list[tuple[float, float]]] = {}
    chunk_reads: dict[str, list[tuple[str, ...]]] = {}
    chunk_derived: dict[str, list[dict[str, Predicate]]] = {}
    for etype, items in pending.items():
        # rules sorted by active window, so a chunk holds rules of neighbouring seasons
        # and the engine skips chunks whose rules are all out of season
        items.sort(key=lambda item: (item[3], item[4]))
        chunks: list[dict[str, Any]] = [{}]
        spans = [(math.inf, -math.inf)]
        keys: list[set[str]] = [set()]
        checks: list[dict[str, Predicate]] = [{}]
        load = 0
        for name, match, weight, lo, hi, reads, used in items:
            if chunks[-1] and load + weight > CHUNK_PATHS:
                chunks.append({})
                spans.append((math.inf, -math.inf))
                keys.append(set())
                checks.append({})
                load = 0
            chunks[-1]["r_" + name] = {"all": [{"m": match}], "run": name}
            spans[-1] = (min(spans[-1][0], lo), max(spans[-1][1], hi))
            keys[-1].update(reads)
            checks[-1].update((d, compiler.derived[d]) for d in used)
            load += weight
        by_type[etype] = chunks
        spans_by_type[etype] = spans
        chunk_derived[etype] = checks
        chunk_reads[etype] = [tuple(sorted(k - set(c))) for k, c in zip(keys, checks,
                                                                         strict=True)]
    return CompiledRuleset(
        document["name"], version, bool(document.get("stacking", False)), digest(document),
        rules, by_type, compiler.derived, derived_by_type,
        {t: tuple(sorted(r - set(derived_by_type.get(t, {})))) for t, r in reads_by_type.items()},
        spans_by_type, chunk_reads, chunk_derived,
    )
