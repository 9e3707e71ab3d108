"""The rules engine: our wrapper around durable_rules.

One ``RuleEngine`` per process or thread (the C core has no locks). Each event becomes
one fact, asserted then retracted under a fixed session id: every matching rule fires,
nothing stays in the engine's memory, and the 1,024-session cap is never approached.

It drives durable_rules' C core (``durable_rules_engine``) directly rather than through
``durable.engine.Host``: the host runs each fired rule through a Python closure, a state
round trip and JSON decoding (most of the cost when many rules fire) and starts timer
threads we never use. Here a match is read off the action queue and completed at once.
The definitions are the same JSON the host would register.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import durable_rules_engine as core
import orjson

from decisions.events import Event
from rulesets.compile import CompiledRuleset

SID = "0"


@dataclass(frozen=True)
class Match:
    """A rule that fired, and why: the values its conditions read."""

    ruleset: str
    version: int
    rule: str
    priority: int
    actions: list[dict[str, Any]]
    reason: dict[str, Any]


def build_fact(
    event: Event,
    snapshot: dict[str, Any],
    customer: dict[str, Any] | None = None,
    scores: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Flatten event, state, customer attributes and scores into one fact."""
    fact: dict[str, Any] = {"e_" + name: value for name, value in event.properties.items()
                            if isinstance(value, str | int | float | bool)}
    fact["e_type"] = event.type
    fact["ts_ms"] = event.ts_ms
    fact.update({"s_" + name: value for name, value in snapshot.items()})
    customer = customer or {}
    segments = set(snapshot.get("segments") or [])
    for name, value in customer.items():
        if name == "segments":
            segments |= set(value or [])
        elif name == "attributes" and isinstance(value, dict):
            for k, v in value.items():
                if v is not None:
                    fact.setdefault("c_" + k, v)
        elif value is not None:
            fact["c_" + name] = value
    fact["u_segments"] = sorted(segments)
    for name, value in (scores or {}).items():
        fact["sc_" + name] = value
    ts = event.ts
    fact["t_hour"] = ts.hour
    fact["t_weekday"] = ts.weekday()
    return fact


class RuleEngine:
    def __init__(self) -> None:
        self._handles: dict[str, int] = {}
        self._counter = 0

    def load(self, compiled: CompiledRuleset) -> None:
        """Register a compiled version (names carry version and digest: never twice)."""
        for etype, chunks in compiled.by_type.items():
            for i, definition in enumerate(chunks):
                name = compiled.durable_name(etype, i)
                if name in self._handles:
                    continue
                rules = {key: {k: v for k, v in rule.items() if k != "run"}
                         for key, rule in definition.items()}
                self._handles[name] = core.create_ruleset(name, orjson.dumps(rules).decode())

    def unload(self, compiled: CompiledRuleset) -> None:
        """Free a version no longer in use (after a reload switched away from it)."""
        for etype, chunks in compiled.by_type.items():
            for i in range(len(chunks)):
                handle = self._handles.pop(compiled.durable_name(etype, i), None)
                if handle is not None:
                    core.delete_ruleset(handle)

    def evaluate(self, compiled: CompiledRuleset, event: Event,
                 fact: dict[str, Any]) -> list[Match]:
        chunks = compiled.by_type.get(event.type)
        if not chunks:
            return []
        if compiled.durable_name(event.type) not in self._handles:
            self.load(compiled)
        ts_ms = fact.get("ts_ms", event.ts_ms)
        spans = compiled.spans_by_type[event.type]
        reads = compiled.chunk_reads[event.type]
        derived = compiled.chunk_derived[event.type]
        fired: list[str] = []
        for i, (lo, hi) in enumerate(spans):
            if not lo <= ts_ms < hi:  # every rule of the chunk is out of its active window
                continue
            posted: dict[str, Any] = {}
            for key in reads[i]:
                value = fact.get(key)
                if value is not None and not isinstance(value, list | dict):
                    posted[key] = value
            for key, check in derived[i].items():
                posted[key] = 1 if check(fact) else 0
            self._counter += 1
            posted["sid"] = SID
            posted["id"] = f"f{self._counter}"
            _run(self._handles[compiled.durable_name(event.type, i)],
                 orjson.dumps(posted).decode(), fired)
        matches = []
        for key in fired:
            rule = compiled.rules[key[2:]]  # "r_<rule name>"
            reason = {path: fact.get(k) for path, k in rule.reads}
            matches.append(Match(compiled.name, compiled.version, rule.name, rule.priority,
                                 rule.actions, reason))
        matches.sort(key=lambda m: (-m.priority, m.rule))
        return matches


def _run(handle: int, body: str, fired: list[str]) -> None:
    """Assert the fact, collect the rules it matched, retract it."""
    try:
        code, state_handle = core.assert_fact(handle, body)
        if code in (0, 3):  # 1: matched nothing
            started = core.start_action_for_state(handle, state_handle if code == 0 else 0)
            if started:
                message = started[1]
                while message:
                    fired.append(message[2:message.index('"', 2)])  # {"r_<rule>": ...}
                    message = core.complete_and_start_action(handle, state_handle)
    finally:
        core.retract_fact(handle, body)


def event_time(event: Event) -> datetime:
    return event.ts
