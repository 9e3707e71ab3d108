"""The rules engine: our wrapper around durable_rules.

One ``RuleEngine`` per process or thread (the C core has no locks). Each event becomes
one fact, asserted then retracted under a fixed session id: every matching rule fires,
nothing stays in the engine's memory, and the 1,024-session cap is never approached.

It drives durable_rules' C core (``durable_rules_engine``) directly rather than through
``durable.engine.Host``: the host runs each fired rule through a Python closure, a state
round trip and JSON decoding (most of the cost when many rules fire) and starts timer
threads we never use. Here a match is read off the action queue and completed at once.
The definitions are the same JSON the host would register.

Per event, ``evaluate`` takes the chunks of the event's type that the compiled index
lets it meet (the unkeyed ones, plus the bucket of its page, category, product ... value;
see rulesets/compile.py) and are in season, posts each the keys its rules read (derived
predicates computed once per event), and returns one ``Match`` per rule that fired,
highest priority first. Everything per chunk (handle, window, keys, predicates) is
resolved once, at ``load``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import durable_rules_engine as core
import orjson

from decisions.core.events import Event
from rulesets.compile import CompiledRule, CompiledRuleset, Predicate
from rulesets.facts import NESTED

SID = "0"
_assert_fact, _retract_fact = core.assert_fact, core.retract_fact
_start_action, _complete_and_start = core.start_action_for_state, core.complete_and_start_action


@dataclass(slots=True)
class Match:
    """A rule that fired, and why: the values its conditions read."""

    ruleset: str
    version: int
    rule: str
    priority: int
    actions: list[dict[str, Any]]
    reason: dict[str, Any]


# one durable_rules ruleset (a chunk of an event type's rules), ready to post to:
# (handle, active from ms, active until ms, the fact keys it reads with their short names,
# its derived predicates by short name)
_Chunk = tuple[int, float, float, tuple[tuple[str, str], ...],
               tuple[tuple[str, Predicate], ...]]
# per event type: the chunks every event meets (unless a value carries them), whether
# those are all in season at any time, and per indexed fact key, value -> (its chunks,
# whether they hold the unkeyed rules as well, whether they are all in season at any time)
_Plan = tuple[tuple[_Chunk, ...], bool,
              tuple[tuple[str, dict[str, tuple[tuple[_Chunk, ...], bool, bool]]], ...]]
# per fired rule (its durable_rules name, see _rank_name): fact -> its Match
_Makers = dict[str, Callable[[dict[str, Any]], Match]]
_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # in ASCII order


def _rank_name(rank: int, width: int) -> str:
    """``rank`` in base 52, ``width`` digits: names of one width sort as their ranks."""
    digits = []
    for _ in range(width):
        rank, digit = divmod(rank, len(_DIGITS))
        digits.append(_DIGITS[digit])
    return "".join(reversed(digits))


class RuleEngine:
    def __init__(self) -> None:
        self._handles: dict[str, int] = {}
        # per version: its plans by event type, its Match makers, the width of rule names
        self._plans: dict[str, tuple[dict[str, _Plan], _Makers, int]] = {}
        self._aliases: dict[str, dict[str, str]] = {}  # per version: fact key -> its name
        self._counter = 0

    def load(self, compiled: CompiledRuleset) -> None:
        """Register a compiled version (names carry version and digest: never twice)."""
        plans: dict[str, _Plan] = {}
        # durable_rules knows each rule by a short name that sorts in rank order (priority,
        # then name): shorter action messages to read, and the fired rules ranked by
        # sorting their names
        order = sorted(compiled.rules.values(), key=lambda r: (-r.priority, r.name))
        width = 1
        while len(_DIGITS) ** width < len(order):
            width += 1
        ranks = {"r_" + rule.name: _rank_name(rank, width) for rank, rule in enumerate(order)}
        # and each fact key by a short name: fewer bytes to write, parse and hash per post,
        # and to serialize again for every rule that fires
        aliases = self._aliases[compiled.key] = {}

        def alias(key: str) -> str:
            short = aliases.get(key)
            if short is None:
                short = aliases[key] = _short_key(len(aliases))
            return short

        for etype, plan in compiled.types.items():
            ready: list[_Chunk] = []
            for name in plan.chunks:
                chunk = compiled.chunks[name]
                if name not in self._handles:
                    rules = {ranks[key]: {"all": [{"m": _renamed(rule["all"][0]["m"], alias)}]}
                             for key, rule in chunk.definition.items()}
                    self._handles[name] = core.create_ruleset(name,
                                                              orjson.dumps(rules).decode())
                lo, hi = chunk.span
                ready.append((self._handles[name], lo, hi,
                              tuple((key, alias(key)) for key in chunk.reads),
                              tuple((alias(key), check) for key, check
                                    in chunk.derived.items())))
            unkeyed, keyed = plan.index
            carrier, carried = plan.carried
            plans[etype] = (tuple(ready[i] for i in unkeyed),
                            _timeless(ready[i] for i in unkeyed),
                            tuple((key, {value: (tuple(ready[i] for i in met),
                                                 key == carrier and value in carried,
                                                 _timeless(ready[i] for i in met))
                                         for value, met in table.items()})
                                  for key, table in keyed))
        self._plans[compiled.key] = (plans, {
            ranks["r_" + rule.name]: _maker(compiled, rule) for rule in order}, width)

    def durable_fact(self, compiled: CompiledRuleset, posted: dict[str, Any]) -> dict[str, Any]:
        """``posted`` (fact keys, as chunks' ``reads`` and ``derived`` name them) with
        the names its loaded rulesets know them by: what ``evaluate`` posts (benchmarks)."""
        aliases = self._aliases[compiled.key]
        return {aliases.get(key, key): value for key, value in posted.items()}

    def unload(self, compiled: CompiledRuleset) -> None:
        """Free a version no longer in use (after a reload switched away from it)."""
        self._plans.pop(compiled.key, None)
        self._aliases.pop(compiled.key, None)
        for name in compiled.chunks:
            handle = self._handles.pop(name, None)
            if handle is not None:
                core.delete_ruleset(handle)

    def evaluate(self, compiled: CompiledRuleset, event: Event,
                 fact: dict[str, Any]) -> list[Match]:
        """The rules of ``compiled`` that ``fact`` (``build_fact``) matches, highest
        priority first (then by name)."""
        loaded = self._plans.get(compiled.key)
        if loaded is None:
            if event.type not in compiled.types:
                return []
            self.load(compiled)
            loaded = self._plans[compiled.key]
        plans, makers, width = loaded
        plan = plans.get(event.type)
        if plan is None:
            return []
        unkeyed, timeless, keyed = plan
        get = fact.get
        ts_ms = fact.get("ts_ms", event.ts_ms)
        met: list[_Chunk] = []
        for key, table in keyed:  # the rules indexed by an event property's value
            value = get(key)
            if isinstance(value, str):
                hit = table.get(value)
                if hit:
                    chunks, carries, always = hit
                    if always:  # no active windows: no filter
                        met += chunks
                    else:
                        met.extend(c for c in chunks if c[1] <= ts_ms < c[2])
                    if carries:  # these chunks hold the unkeyed rules too
                        unkeyed = ()
        if timeless:
            met += unkeyed
        else:
            met.extend(c for c in unkeyed if c[1] <= ts_ms < c[2])
        if not met:
            return []
        fired: list[str] = []
        known: dict[str, int] = {}  # derived predicates already computed for this fact
        end = 2 + width  # a match message starts {"<rule name>"
        for handle, _, _, reads, derived in met:
            posted = {short: value for key, short in reads
                      if (value := get(key)) is not None and not isinstance(value, NESTED)}
            for key, check in derived:
                result = known.get(key)
                if result is None:
                    result = known[key] = 1 if check(fact) else 0
                posted[key] = result
            self._counter += 1
            posted["sid"] = SID
            posted["id"] = fid = f"f{self._counter}"
            # _run, inlined: once per post, and its loop once per match
            try:
                code, state_handle = _assert_fact(handle, orjson.dumps(posted).decode())
                if code in (0, 3):  # 1: matched nothing
                    started = _start_action(handle, state_handle if code == 0 else 0)
                    if started:
                        message = started[1]
                        while message:
                            fired.append(message[2:end])
                            message = _complete_and_start(handle, state_handle)
            finally:
                _retract_fact(handle, f'{{"sid":"0","id":"{fid}"}}')
        if not fired:
            return []
        # once per rule: durable_rules matches a rule once per alternative that holds
        # (``any``: both sides true, two matches); names sort in rank order
        return [makers[name](fact) for name in sorted(set(fired))]


def _timeless(chunks: Iterable[_Chunk]) -> bool:
    """Whether these chunks' rules are in season at any time (no active windows)."""
    return all(c[1] == -math.inf and c[2] == math.inf for c in chunks)


def _short_key(n: int) -> str:
    """The ``n``-th short fact key: a letter, then digits (never ``id`` or ``sid``)."""
    head, n = divmod(n, len(_DIGITS))
    return _DIGITS[n] + (str(head) if head else "")


def _renamed(cond: dict[str, Any], alias: Callable[[str], str]) -> dict[str, Any]:
    """A compiled condition with its fact keys renamed (operators start with ``$``)."""
    out: dict[str, Any] = {}
    for key, value in cond.items():
        if key in ("$and", "$or"):
            out[key] = [_renamed(part, alias) for part in value]
        elif key.startswith("$"):
            out[key] = _renamed(value, alias)
        else:
            out[alias(key)] = value
    return out


def _maker(compiled: CompiledRuleset, rule: CompiledRule) -> Callable[[dict[str, Any]], Match]:
    """``fact -> Match`` for a rule that fired, its ``reason`` (each field the rule's
    conditions read, with its value) one dict display: about half the cost of a
    comprehension, and it runs once per match. Paths and keys enter the source only as
    ``repr`` literals; the rest are names bound in its globals."""
    items = ", ".join(f"{path!r}: fact.get({key!r})" for path, key in rule.reads)
    code = f"lambda fact: Match(ruleset, version, name, priority, actions, {{{items}}})"
    scope = {"Match": Match, "ruleset": compiled.name, "version": compiled.version,
             "name": rule.name, "priority": rule.priority, "actions": rule.actions}
    return cast(Callable[[dict[str, Any]], Match], eval(code, scope))  # noqa: S307
