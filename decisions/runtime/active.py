"""The rulesets a worker evaluates: the active versions, compiled, reloaded between batches.

``Runtime.refresh`` asks the store for a cheap marker of the active versions every
``interval`` seconds; when it changed, new versions are compiled and loaded into the
engine, replaced ones are freed, and what the worker derives from the rules (whether any
reads a model score, which idle timers they wait for, which recommendation models their
strategies read) is recomputed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from decisions.core import metrics
from decisions.runtime.engine import RuleEngine
from decisions.runtime.recommend import MODELS, models_for
from decisions.runtime.state import replay_features, wanted_features
from rulesets.compile import CompiledRuleset, compile_ruleset
from rulesets.store import RulesetStore

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """The compiled active rulesets, reloaded between batches when a new version is out."""

    store: RulesetStore
    engine: RuleEngine
    interval: float
    active: list[CompiledRuleset] = field(default_factory=list)
    marker: str | None = None
    checked: float = 0.0
    cache: dict[tuple[str, int], CompiledRuleset] = field(default_factory=dict)
    uses_scores: bool = False  # some active rule reads score.<model>
    timers: list[tuple[str, int]] = field(default_factory=list)  # idle timers, on reload
    wanted: str = ""  # windowed state features the rules read (decisions.runtime.state spec)
    wanted_all: str = ""  # the same with every standard feature (while a model reads them)
    models: frozenset[str] = MODELS  # recommendation models the rules' strategies read

    def refresh(self, force: bool = False) -> bool:
        now = time.monotonic()
        if not force and now - self.checked < self.interval:
            return False
        self.checked = now
        marker = self.store.active_marker()
        if marker == self.marker:
            return False
        active = []
        for item in self.store.active_documents():
            key = (item.name, item.version)
            if key not in self.cache:
                compiled = compile_ruleset(item.document, item.version)
                self.engine.load(compiled)
                self.cache[key] = compiled
            active.append(self.cache[key])
            metrics.RULESET_VERSION.labels(item.name).set(item.version)
        self.active = active
        self.marker = marker
        live = {(c.name, c.version) for c in active}
        for key in [k for k in self.cache if k not in live]:  # free replaced versions
            self.engine.unload(self.cache.pop(key))
        self.uses_scores = any(path.startswith("score.") for compiled in active
                               for rule in compiled.rules.values() for path in rule.fields)
        self.timers = self.idle_timers()
        # What the rules' conditions name; the worker asks for the whole snapshot instead
        # while a model is active (models read most windowed features).
        paths = [path for compiled in active for rule in compiled.rules.values()
                 for path in rule.fields]
        self.wanted = wanted_features(paths)
        self.wanted_all = replay_features(paths)
        self.models = models_for(
            str(params.get("strategy")) for compiled in active
            for rule in compiled.rules.values() for action in rule.actions
            for name, params in action.items() if name == "recommend")
        log.info("rulesets active: %s", marker or "(none)")
        return True

    def idle_timers(self) -> list[tuple[str, int]]:
        """Timers rules wait for, e.g. ``idle_30m`` (no activity for 30 minutes)."""
        found: dict[str, int] = {}
        for compiled in self.active:
            for rule in compiled.rules.values():
                for name in _timer_names(rule):
                    if name.startswith("idle_") and name.endswith("m") and name[5:-1].isdigit():
                        found[name] = int(name[5:-1]) * 60_000
        return sorted(found.items())


def _timer_names(rule: Any) -> list[str]:
    return list(getattr(rule, "timers", []))
