"""Holdouts: which shoppers an experiment keeps from a rule or a whole ruleset.

A ruleset or a rule may say ``holdout: {share: 0.1, experiment: "hv-2026-11"}``. A
shopper is in the experiment's *control* group when the SHA-256 of
``<experiment>\\x1f<user_id>``, read as a number in [0, 1), is below ``share``: the same
answer in every worker process, after restarts and in replays, and a new experiment name
reshuffles the groups. ``experiment`` defaults to the ruleset's name (ruleset holdout) or
``<ruleset>/<rule>`` (rule holdout).

The decision step (``decisions.runtime.decide``) applies it, so the worker, try-it, dry
runs and backtests all agree; this module only holds the assignment.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

CONTROL, TREATMENT = "control", "treatment"
_SCALE = float(1 << 64)


@dataclass(frozen=True)
class Holdout:
    share: float  # 0 < share < 1: the part of eligible shoppers held out
    experiment: str  # the salt: a new name reshuffles the groups

    def group(self, user_id: str) -> str:
        return CONTROL if position(self.experiment, user_id) < self.share else TREATMENT

    def reason(self) -> str:
        return f"held out by experiment {self.experiment} ({self.share:.0%} control group)"


def position(experiment: str, user_id: str) -> float:
    """The shopper's uniform place in [0, 1) for this experiment."""
    digest = hashlib.sha256(f"{experiment}\x1f{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def holdout_of(spec: Any, default_experiment: str) -> Holdout | None:
    """A validated ``holdout`` object (or None) as a ``Holdout``."""
    if not spec:
        return None
    share = float(spec.get("share", 0))
    if share <= 0:
        return None
    return Holdout(share, str(spec.get("experiment") or default_experiment))
