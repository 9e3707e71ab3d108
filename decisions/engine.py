"""The rules engine host: our wrapper around durable_rules.

One ``RuleEngine`` per process (the C core has no locks). Each event becomes one fact,
asserted then retracted under a fixed session id: every matching rule fires, nothing
stays in the engine's memory, and the 1,024-session cap is never approached.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from durable import engine as durable

from decisions.events import Event
from rulesets.compile import CompiledRuleset, fact_key

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


class _Host(durable.Host):
    def __init__(self, fired: list[str]) -> None:
        super().__init__()
        self._fired = fired

    def get_action(self, action_name: str) -> Any:
        fired = self._fired

        def record(c: Any) -> None:
            fired.append(action_name)

        return record


def build_fact(
    event: Event,
    snapshot: dict[str, Any],
    customer: dict[str, Any] | None = None,
    scores: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Flatten event, state, customer attributes and scores into one fact."""
    fact: dict[str, Any] = {"e_type": event.type, "ts_ms": event.ts_ms}
    for name, value in event.properties.items():
        if isinstance(value, str | int | float | bool):
            fact["e_" + name] = value
    for name, value in snapshot.items():
        fact["s_" + name] = value
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
        self._fired: list[str] = []
        self._host = _Host(self._fired)
        self._loaded: set[str] = set()
        self._counter = 0

    def load(self, compiled: CompiledRuleset) -> None:
        """Register a compiled version (names carry version and digest: never twice)."""
        for etype, definition in compiled.by_type.items():
            name = compiled.durable_name(etype)
            if name in self._loaded:
                continue
            # registration deletes "run" from the dict it is given: pass a copy
            self._host.set_rulesets({name: copy.deepcopy(definition)})
            self._loaded.add(name)

    def evaluate(self, compiled: CompiledRuleset, event: Event,
                 fact: dict[str, Any]) -> list[Match]:
        definition = compiled.by_type.get(event.type)
        if not definition:
            return []
        name = compiled.durable_name(event.type)
        if name not in self._loaded:
            self.load(compiled)
        posted: dict[str, Any] = {
            k: v for k, v in fact.items() if not isinstance(v, list | dict) and v is not None
        }
        for key, check in compiled.derived_by_type.get(event.type, {}).items():
            posted[key] = 1 if check(fact) else 0
        self._counter += 1
        posted["sid"] = SID
        posted["id"] = f"f{self._counter}"
        self._fired.clear()
        try:
            self._host.assert_fact(name, posted)
        except durable.MessageNotHandledException:
            pass
        finally:
            self._host.retract_fact(name, posted)
        matches = []
        for rule_name in self._fired:
            rule = compiled.rules[rule_name]
            reason = {path: fact.get(fact_key(path)) for path in rule.fields}
            matches.append(Match(compiled.name, compiled.version, rule_name, rule.priority,
                                 rule.actions, reason))
        matches.sort(key=lambda m: (-m.priority, m.rule))
        return matches


def event_time(event: Event) -> datetime:
    return event.ts
