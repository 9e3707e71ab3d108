"""Compile a validated ruleset document into durable_rules definitions.

Each event is evaluated as one *fact* (event + user state + customer + scores), asserted
and retracted under one bounded session id, so every matching rule fires and nothing
temporal lives in the engine (see DESIGN.md). Rules are indexed by the event types they
can match: one durable_rules ruleset per event type, so cost grows with the rules that
could fire for an event, not with the whole ruleset.

Operators durable_rules lacks (contains, prefix, membership in lists, negations of
those) become *derived predicates*: small Python checks computed into the fact as 0/1
before it is asserted. ``not`` is pushed down to the leaves (De Morgan).
"""

from __future__ import annotations

import hashlib
import json
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


@dataclass
class CompiledRuleset:
    name: str
    version: int
    stacking: bool
    digest: str
    rules: dict[str, CompiledRule]
    by_type: dict[str, dict[str, Any]]  # event type -> durable_rules ruleset definition
    derived: dict[str, Predicate] = field(default_factory=dict)
    # event type -> the derived predicates its rules read (only those are computed)
    derived_by_type: dict[str, dict[str, Predicate]] = field(default_factory=dict)

    def durable_name(self, event_type: str) -> str:
        return f"{self.name}--v{self.version}--{self.digest[:8]}--{event_type}"


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


def compile_ruleset(document: dict[str, Any], version: int) -> CompiledRuleset:
    """``document`` must have passed ``rulesets.validate.validate``."""
    compiler = _Compiler()
    rules: dict[str, CompiledRule] = {}
    by_type: dict[str, dict[str, Any]] = {}
    derived_by_type: dict[str, dict[str, Predicate]] = {}
    for rule in document["rules"]:
        if not rule.get("enabled", True):
            continue
        compiler.fields = []
        compiler.timers = []
        compiler.used = []
        cond = compiler.node(rule["when"])
        parts = cond["$and"] if "$and" in cond else [cond]
        active = rule.get("active") or {}
        if active.get("from"):
            parts = [*parts, {"$gte": {"ts_ms": _epoch_ms(active["from"])}}]
        if active.get("until"):
            parts = [*parts, {"$lt": {"ts_ms": _epoch_ms(active["until"])}}]
        match = parts[0] if len(parts) == 1 else {"$and": parts}
        types = _event_types(rule["when"])
        rules[rule["name"]] = CompiledRule(
            rule["name"], int(rule.get("priority", 0)), list(rule["then"]),
            list(compiler.fields), types, list(compiler.timers), rule["when"],
            {k: str(v) for k, v in active.items() if v}, list(compiler.used),
        )
        for etype in types:
            by_type.setdefault(etype, {})["r_" + rule["name"]] = {
                "all": [{"m": match}], "run": rule["name"],
            }
            wanted = derived_by_type.setdefault(etype, {})
            for name in compiler.used:
                wanted[name] = compiler.derived[name]
    return CompiledRuleset(
        document["name"], version, bool(document.get("stacking", False)), digest(document),
        rules, by_type, compiler.derived, derived_by_type,
    )
