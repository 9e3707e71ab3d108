"""Compile a validated ruleset document into durable_rules definitions.

Each event is evaluated as one *fact* (event + user state + customer + scores), asserted
and retracted under one bounded session id, so every matching rule fires and nothing
temporal lives in the engine (see DESIGN.md). Rules are indexed so that an event meets
only the rules that can match it, and cost grows with those, not with the whole ruleset:

- by the event types they can match: durable_rules rulesets per event type; a top-level
  condition on ``event.type`` is then left out of the compiled match;
- then by one event property they require: a top-level ``eq`` / ``in`` on a string
  property (``event.page``, ``event.category``, ``event.product_id`` ...) puts the rule in
  a bucket per value, looked up with the event's value (``CompiledRuleset.chunks_for``);
  of several such conditions, the property the ruleset names the most values of is used.
  Rules without one stay in their type's unkeyed bucket, which every event of the type
  meets, unless its value's own rulesets carry the unkeyed rules as well (``_carrier``).

Only the fact keys a chunk's rules read are posted to it. Within a bucket, each rule's
conditions are ordered so that rules share their leading ones (durable_rules tests a
shared condition node once, see ``_arrange``), and rules are sorted by active window:
chunks whose rules are all out of season are skipped.

durable_rules' matcher overflows (error 303) when more than 64 matched nodes are pending
at once, so each bucket's rules are packed into rulesets of at most ``CHUNK_PATHS``
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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from decisions.core.events import parse_time
from rulesets.budget import Budget, budget_of
from rulesets.explain import holds, typed_holds
from rulesets.facts import fact_key
from rulesets.holdout import Holdout, holdout_of
from rulesets.language import (
    EVENT_TYPE_CHOICES,
    FIELDS,
    LIST,
    STRING,
    field_type,
    from_attributes,
)

Predicate = Callable[[dict[str, Any]], bool]
# per event type: the chunks every event of the type meets, and per indexed fact key the
# chunks an event with that value meets (indices into the type's chunk lists)
TypeIndex = tuple[tuple[int, ...], tuple[tuple[str, dict[str, tuple[int, ...]]], ...]]
NEGATE = {"eq": "ne", "ne": "eq", "gt": "lte", "gte": "lt", "lt": "gte", "lte": "gt",
          "in": "not_in", "not_in": "in"}
# a rule without conditions (durable_rules needs one): every fact has its event type
ALWAYS: dict[str, Any] = {"$ex": {"e_type": 1}}
DURABLE_OP = {"gt": "$gt", "gte": "$gte", "lt": "$lt", "lte": "$lte", "ne": "$neq"}


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
    holdout: Holdout | None = None  # its control group (rulesets/holdout.py), if any
    budget: Budget | None = None  # its total budget (rulesets/budget.py), if any

    def __post_init__(self) -> None:
        self.reads = tuple((path, fact_key(path)) for path in self.fields)  # for reasons


@dataclass(frozen=True)
class Chunk:
    """One durable_rules ruleset: a chunk of the rules of one event type (at most
    ``CHUNK_PATHS`` condition paths), with what the engine needs to post to it."""

    name: str  # its durable_rules name, unique per ruleset version
    definition: dict[str, Any]  # durable_rules rule name -> rule
    span: tuple[float, float]  # the time (ms) its rules' active windows cover
    reads: tuple[str, ...]  # the fact keys its rules read (only those are posted)
    derived: dict[str, Predicate]  # the derived predicates its rules read


@dataclass(frozen=True)
class TypePlan:
    """The chunks of one event type, by name in order, and which of them an event meets."""

    chunks: tuple[str, ...]
    index: TypeIndex  # positions in ``chunks``: the unkeyed ones, and per key value -> met
    # (index key, values): the buckets whose chunks also hold the type's unkeyed rules; an
    # event with such a value meets them there, not the unkeyed chunks
    carried: tuple[str, frozenset[str]] = ("", frozenset())


@dataclass
class CompiledRuleset:
    name: str
    version: int
    stacking: bool
    digest: str
    rules: dict[str, CompiledRule]
    chunks: dict[str, Chunk]  # by durable_rules name
    types: dict[str, TypePlan]  # by event type
    derived: dict[str, Predicate] = field(default_factory=dict)
    holdout: Holdout | None = None  # the ruleset's control group, if any
    caps: tuple[int, int] = (0, 0)  # offers per shopper per day, per week (0: none)
    budget: Budget | None = None  # the ruleset's total budget, if any

    def __post_init__(self) -> None:
        self.key = f"{self.name}--v{self.version}--{self.digest[:8]}"  # names it in engines

    def durable_name(self, event_type: str, chunk: int = 0) -> str:
        name = f"{self.key}--{event_type}"
        return f"{name}--{chunk}" if chunk else name

    def chunks_of(self, event_type: str) -> list[Chunk]:
        """The chunks of an event type, in order (none for a type no rule listens to)."""
        plan = self.types.get(event_type)
        return [self.chunks[name] for name in plan.chunks] if plan else []

    def chunks_for(self, event_type: str, fact: dict[str, Any]) -> tuple[int, ...]:
        """The chunks of ``event_type`` an event with this fact meets (window aside)."""
        plan = self.types.get(event_type)
        if plan is None:
            return ()
        unkeyed, keyed = plan.index
        carrier, carried = plan.carried
        met: tuple[int, ...] = ()
        for key, table in keyed:
            value = fact.get(key)
            if isinstance(value, str) and value in table:
                met += table[value]
                if key == carrier and value in carried:
                    unkeyed = ()  # its chunks hold the unkeyed rules as well
        return unkeyed + met


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
        if from_attributes(path) and op != "exists":
            # a customer attribute may hold any type: durable_rules would compare text
            # with numbers (``"pro" > 3`` holds there), so a typed check decides
            return self.derive(key, op, value, negate, typed=True)
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

    def derive(self, key: str, op: str, value: Any, negate: bool,
               typed: bool = False) -> dict[str, Any]:
        name = "x_" + hashlib.sha1(  # noqa: S324 - a name, not security
            json.dumps([key, op, value, negate, typed]).encode()
        ).hexdigest()[:12]
        self.derived[name] = _typed(key, op, value, negate) if typed \
            else _check(key, op, value, negate)
        if name not in self.used:
            self.used.append(name)
        return {name: 1}


def _check(key: str, op: str, value: Any, negate: bool) -> Predicate:
    """The derived predicate ``key op value`` (negated), one closure per operator: it runs
    once per event for every derived condition its rules read, so it tests no more than
    its own case. A missing value never matches, negated or not (``exists`` aside)."""
    if op == "exists":
        def exists(fact: dict[str, Any]) -> bool:
            return (fact.get(key) is not None) != negate

        return exists
    if op == "contains":
        def contains(fact: dict[str, Any]) -> bool:
            got = fact.get(key)
            if got is None:
                return False
            return (value in got if isinstance(got, _CONTAINERS) else False) != negate

        return contains
    if op == "prefix":
        def prefix(fact: dict[str, Any]) -> bool:
            got = fact.get(key)
            if got is None:
                return False
            return (isinstance(got, str) and got.startswith(value)) != negate

        return prefix

    def other(fact: dict[str, Any]) -> bool:  # no other operator is derived
        return fact.get(key) is not None and negate

    return other


def _typed(key: str, op: str, value: Any, negate: bool) -> Predicate:
    """A leaf on a customer attribute of any type (``rulesets.explain.typed_holds``)."""
    def typed(fact: dict[str, Any]) -> bool:
        return typed_holds(op, fact.get(key), value, negate)

    return typed


_CONTAINERS = (list, str)  # a tuple: ``list | str`` would build a union on every call


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
    return int(parse_time(value).timestamp() * 1000)


MAX_PATHS = 8  # a condition expanding to more alternatives is evaluated in Python instead
CHUNK_PATHS = 32  # alternatives per durable_rules ruleset: its matcher overflows near 64
# a value's own rulesets carrying its type's unkeyed rules (see _carrier) may hold more:
# durable_rules' limit is 64 matched nodes pending at once, and no more can be pending than
# a ruleset has alternatives (checked: 64 rules that all match fire, 65 fail)
CARRY_PATHS = CHUNK_PATHS + CHUNK_PATHS // 2
# an index value whose rules expand into fewer alternatives shares its rulesets with other
# such values (its condition restated): one small durable_rules ruleset costs ~70 KB
POOL_BELOW = CHUNK_PATHS // 4
# a condition naming more values is not indexed (a rule shared by several values restates
# them as alternatives, and durable_rules hangs building a node with ~500 children)
INDEX_MAX_VALUES = CHUNK_PATHS
# Event properties a rule can be indexed by (besides its type): string fields, compared
# by equality, so a dictionary lookup on the event's value finds the rules that can match.
INDEX_FIELDS = tuple(path for path in FIELDS if path.startswith("event.")
                     and path != "event.type" and field_type(path) == STRING)


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


def _index_candidate(cond: dict[str, Any]) -> tuple[str, tuple[str, ...]] | None:
    """A top-level condition the property index can decide: ``event.<string property>``
    ``eq`` / ``in`` string values. Returns the field path and its values."""
    if cond.get("field") not in INDEX_FIELDS or cond.get("op") not in ("eq", "in"):
        return None
    value = cond.get("value")
    values = value if isinstance(value, list) else [value]
    if not values or len(values) > INDEX_MAX_VALUES or not all(isinstance(v, str)
                                                               for v in values):
        return None
    return cond["field"], tuple(dict.fromkeys(values))


def _whole(when: dict[str, Any]) -> Predicate:
    def check(fact: dict[str, Any]) -> bool:
        return holds(when, fact)

    return check


def _flat(cond: dict[str, Any]) -> list[dict[str, Any]]:
    """The conjuncts of a compiled condition (nested ``$and`` flattened)."""
    if "$and" in cond:
        return [part for sub in cond["$and"] for part in _flat(sub)]
    return [cond]


def _sig(cond: dict[str, Any]) -> str:
    return orjson.dumps(cond, option=orjson.OPT_SORT_KEYS).decode()


def _arrange(conjuncts: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """Order each rule's conjuncts so that rules share leading conditions.

    durable_rules builds one node per condition and shares it between rules whose
    conditions agree up to it (a trie): a shared node is tested once per fact, not once
    per rule. Greedily, the condition most rules of a group have goes first, then the
    same within the rules that have it, and so on. Plain comparisons go before
    alternatives (``$or``), whose branches would each repeat what follows them.
    Conjunction is order-free (every condition is a pure test of the fact), so the order
    changes cost only, never a result.
    """
    left = [{_sig(c): c for c in conds} for conds in conjuncts]
    out: list[list[dict[str, Any]]] = [[] for _ in conjuncts]
    stack = [list(range(len(conjuncts)))]
    while stack:
        members = [i for i in stack.pop() if left[i]]
        if not members:
            continue
        counts = Counter(s for i in members for s in left[i] if "$or" not in left[i][s])
        if not counts:
            counts = Counter(s for i in members for s in left[i])
        best = min(counts.items(), key=lambda item: (-item[1], item[0]))[0]
        having = [i for i in members if best in left[i]]
        stack.append([i for i in members if best not in left[i]])
        for i in having:
            out[i].append(left[i].pop(best))
        stack.append(having)
    return out


@dataclass
class _Item:
    """One rule as compiled for one bucket of the index, before packing into chunks."""

    name: str
    conjuncts: list[dict[str, Any]]  # its conditions but those the index decides
    lo: float
    hi: float
    used: list[str]
    # conditions tested first: the indexed ones, restated where the chunk is shared by
    # several values (or where nothing else is left to test)
    prefix: list[dict[str, Any]] = field(default_factory=list)
    values: list[str] = field(default_factory=list)  # the index values it is met under

    def weight(self) -> int:
        return math.prod(_paths(c) for c in self.conjuncts) if self.conjuncts else 1


def compile_ruleset(document: dict[str, Any], version: int) -> CompiledRuleset:
    """``document`` must have passed ``rulesets.validate.validate``."""
    compiler = _Compiler()
    rules: dict[str, CompiledRule] = {}
    enabled = [rule for rule in document["rules"] if rule.get("enabled", True)]
    # the property each rule is indexed by: of its candidates, the field the ruleset's
    # rules name the most distinct values of (the most selective), then by name
    distinct: dict[str, set[str]] = {}
    for rule in enabled:
        when = rule["when"]
        for cond in when["all"] if "all" in when else [when]:
            found = _index_candidate(cond)
            if found:
                distinct.setdefault(found[0], set()).update(found[1])
    # (event type, index key or "", value) -> rules
    pending: dict[tuple[str, str, str], list[_Item]] = {}
    for rule in enabled:
        compiler.fields = []
        compiler.timers = []
        compiler.used = []
        when = rule["when"]
        top = when["all"] if "all" in when else [when]
        candidates = [(i, found) for i, cond in enumerate(top)
                      if (found := _index_candidate(cond))]
        chosen = min(candidates, key=lambda c: (-len(distinct[c[1][0]]), c[1][0], c[0]),
                     default=None)
        conjuncts: list[dict[str, Any]] = []
        for i, cond in enumerate(top):
            compiled_cond = compiler.node(cond)  # also records fields (reasons) and timers
            if not _indexed(cond) and (chosen is None or i != chosen[0]):
                conjuncts.extend(_flat(compiled_cond))
        if not conjuncts and chosen is None:  # only event.type conditions: keep them
            conjuncts = _flat(compiler.node(when)) if top else [ALWAYS]
        weight = math.prod(_paths(c) for c in conjuncts) if conjuncts else 1
        if weight > MAX_PATHS:  # too many alternatives for durable_rules: one Python check
            name = "x_rule_" + hashlib.sha1(  # noqa: S324 - a name, not security
                json.dumps(when, sort_keys=True).encode()).hexdigest()[:12]
            compiler.derived[name] = _whole(when)
            compiler.used = [name]
            conjuncts = [{name: 1}]
        active = rule.get("active") or {}
        types = _event_types(when)
        rules[rule["name"]] = CompiledRule(
            rule["name"], int(rule.get("priority", 0)), list(rule["then"]),
            list(compiler.fields), types, list(compiler.timers), when,
            {k: str(v) for k, v in active.items() if v}, list(compiler.used),
            holdout_of(rule.get("holdout"), f"{document['name']}/{rule['name']}"),
            budget_of(rule.get("budget"), f"{document['name']}/{rule['name']}"),
        )
        lo = _epoch_ms(active["from"]) if active.get("from") else -math.inf
        hi = _epoch_ms(active["until"]) if active.get("until") else math.inf
        buckets = [("", "")]
        if chosen is not None:
            key = fact_key(chosen[1][0])
            buckets = [(key, value) for value in chosen[1][1]]
        for etype in types:
            for key, value in buckets:
                pending.setdefault((etype, key, value), []).append(
                    _Item(rule["name"], conjuncts, lo, hi, list(compiler.used)))
    chunks: dict[str, Chunk] = {}
    names_by_type: dict[str, list[str]] = {}
    plans: dict[str, TypePlan] = {}
    compiled = CompiledRuleset(
        document["name"], version, bool(document.get("stacking", False)), digest(document),
        rules, chunks, plans, compiler.derived,
        holdout_of(document.get("holdout"), document["name"]), _caps(document.get("caps")),
        budget_of(document.get("budget"), document["name"]))
    by_key: dict[str, dict[str, dict[str, list[_Item]]]] = {}  # type -> key -> value
    for (etype, key, value), items in sorted(pending.items()):
        by_key.setdefault(etype, {}).setdefault(key, {})[value] = items

    def add(etype: str, items: list[_Item],
            limit: int = CHUNK_PATHS) -> list[tuple[int, list[_Item]]]:
        """Pack items into the type's chunks: (chunk index, its items) per chunk."""
        out = []
        names = names_by_type.setdefault(etype, [])
        for definition, span, reads, checks, packed in _pack(items, compiler.derived, limit):
            out.append((len(names), packed))
            name = compiled.durable_name(etype, len(names))
            names.append(name)
            chunks[name] = Chunk(name, definition, span, reads, checks)
        return out

    for etype, keys in by_key.items():
        plain = keys.pop("", {}).get("", [])
        unkeyed = tuple(i for i, _ in add(etype, plain))
        # the key whose buckets of their own carry the unkeyed rules (see _carrier)
        carrier = _carrier(plain, keys)
        carried: set[str] = set()
        tables: dict[str, dict[str, tuple[int, ...]]] = {}
        for key, by_value in keys.items():
            table: dict[str, set[int]] = {}
            pool: dict[str, _Item] = {}  # small buckets share chunks: rule -> its values
            for value, items in by_value.items():
                if sum(item.weight() for item in items) >= POOL_BELOW:
                    # a bucket of its own: the index decided the condition; restate it
                    # only for a rule with nothing else to test (durable_rules needs one)
                    own = [_Item(i.name, i.conjuncts, i.lo, i.hi, i.used,
                                 [] if i.conjuncts else [{key: value}]) for i in items]
                    limit = CHUNK_PATHS
                    if key == carrier and _weight(plain) + _weight(own) <= CARRY_PATHS:
                        own += plain  # one post instead of two (see _carrier)
                        carried.add(value)
                        limit = CARRY_PATHS
                    table[value] = {i for i, _ in add(etype, own, limit)}
                    continue
                for item in items:
                    pool.setdefault(item.name, _Item(item.name, item.conjuncts, item.lo,
                                                     item.hi, item.used)).values.append(value)
            for item in pool.values():  # restated: the chunk holds rules of other values
                alts: list[dict[str, Any]] = [{key: value} for value in item.values]
                item.prefix = [alts[0] if len(alts) == 1 else {"$or": alts}]
            for index, packed in add(etype, list(pool.values())):
                for item in packed:
                    for value in item.values:
                        table.setdefault(value, set()).add(index)
            tables[key] = {value: tuple(sorted(met)) for value, met in table.items()}
        plans[etype] = TypePlan(tuple(names_by_type[etype]), (unkeyed, tuple(tables.items())),
                                (carrier, frozenset(carried)) if carried else ("", frozenset()))
    return compiled


def _weight(items: list[_Item]) -> int:
    return sum(item.weight() for item in items)


def _carrier(plain: list[_Item], keys: dict[str, dict[str, list[_Item]]]) -> str:
    """The index key whose buckets of their own also take an event type's unkeyed rules.

    An event with such a value then posts one fact to one durable_rules ruleset where it
    would post two (its bucket's and the unkeyed rules'): each post costs a JSON
    document built, parsed, matched and retracted, and another ruleset's memory in the
    cache. Only one key carries them (an event with values of two keys must not meet the
    unkeyed rules twice), and only where both fit one ruleset (``CARRY_PATHS``): the
    unkeyed rules are copied into each such bucket, so a large unkeyed set (a season's
    campaign, hundreds of untargeted rules) stays in its own rulesets. Of the keys, the
    one with the most buckets of their own (the most events carried), then by name.
    """
    if not plain or _weight(plain) > CHUNK_PATHS // 2:
        return ""
    own = {key: sum(1 for items in by_value.values()
                    if sum(item.weight() for item in items) >= POOL_BELOW)
           for key, by_value in keys.items()}
    best = min(own, key=lambda key: (-own[key], key), default="")
    return best if own.get(best) else ""


def _pack(items: list[_Item], derived: dict[str, Predicate], limit: int = CHUNK_PATHS) -> list[
        tuple[dict[str, Any], tuple[float, float], tuple[str, ...], dict[str, Predicate],
              list[_Item]]]:
    """Pack one bucket's rules into durable_rules rulesets of at most ``CHUNK_PATHS``
    alternatives: by active window (a chunk holds rules of neighbouring seasons, and the
    engine skips chunks whose rules are all out of season), then by restated index
    condition (rules of one value together), conditions arranged so that neighbouring
    rules share their leading ones (see ``_arrange``)."""
    groups: dict[tuple[float, float, str], list[_Item]] = {}
    for item in items:
        groups.setdefault((item.lo, item.hi, _sig({"p": item.prefix})), []).append(item)
    ordered: list[tuple[tuple[float, float, str], list[str], _Item, list[dict[str, Any]]]] = []
    for group_key, group in groups.items():
        for item, conds in zip(group, _arrange([i.conjuncts for i in group]), strict=True):
            ordered.append((group_key, [_sig(c) for c in conds], item, conds))
    ordered.sort(key=lambda entry: (entry[0], entry[1], entry[2].name))
    out: list[tuple[dict[str, Any], tuple[float, float], tuple[str, ...],
                    dict[str, Predicate], list[_Item]]] = []
    definition: dict[str, Any] = {}
    span = (math.inf, -math.inf)
    keys: set[str] = set()
    checks: dict[str, Predicate] = {}
    packed: list[_Item] = []
    load = 0
    window = (-math.inf, math.inf)
    for (lo, hi, _), _, item, conds in ordered:
        # the active window first: rules out of season stop at their first (shared) node
        parts = [*item.prefix, *conds]
        if hi != math.inf:
            parts.insert(0, {"$lt": {"ts_ms": int(hi)}})
        if lo != -math.inf:
            parts.insert(0, {"$gte": {"ts_ms": int(lo)}})
        match = parts[0] if len(parts) == 1 else {"$and": parts}
        weight = _paths(match)
        # a chunk is full at CHUNK_PATHS alternatives; a new active window starts a new
        # chunk once this one holds a few (so a season's rules are not posted to with
        # the next season's; many tiny windows still share chunks)
        if definition and (load + weight > limit
                           or ((lo, hi) != window and load >= CHUNK_PATHS // 4)):
            out.append((definition, span, tuple(sorted(keys - set(checks))), checks, packed))
            definition, span, keys, checks, packed = {}, (math.inf, -math.inf), set(), {}, []
            load = 0
        definition["r_" + item.name] = {"all": [{"m": match}], "run": item.name}
        span = (min(span[0], lo), max(span[1], hi))
        keys.update(_keys(match))
        checks.update((d, derived[d]) for d in item.used)
        packed.append(item)
        load += weight
        window = (lo, hi)
    if definition:
        out.append((definition, span, tuple(sorted(keys - set(checks))), checks, packed))
    return out


def _caps(spec: dict[str, Any] | None) -> tuple[int, int]:
    spec = spec or {}
    return int(spec.get("per_day") or 0), int(spec.get("per_week") or 0)
