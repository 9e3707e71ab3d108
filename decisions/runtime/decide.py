"""The decision for one event: the one step the worker, try-it, dry runs and backtests call.

``Decider.evaluate`` takes an event with the user's state as of it and the customer's
attributes, and returns what fires: a shopper who withdrew consent gets no decision; the
model scores are computed when some active rule reads one (a scorer that fails, or has no
model loaded, yields no scores: rules on scores then do not fire, the others do); the fact
is built (``rulesets.facts``) and every active ruleset listening to the event's type is
evaluated by durable_rules. ``Decider.act`` turns what fired into effects with the action
handlers; of the recommendations for one user and slot only the last is computed, the
earlier ones are recorded as superseded by it (the slot holds the latest).

What differs between callers is only where the inputs come from (the stream and Redis,
a form, the event archive replayed) and where the effects go (Redis and Kafka, a page, a
tally): never how the decision is taken.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from decisions.core import metrics
from decisions.core.events import Event
from decisions.runtime.actions import Context, Effect, run_actions
from decisions.runtime.engine import Match, RuleEngine
from decisions.runtime.offers import action_id
from decisions.runtime.recommend import Recommender
from rulesets.budget import Budget, cost_cents
from rulesets.compile import CompiledRuleset
from rulesets.facts import build_fact
from rulesets.holdout import CONTROL

log = logging.getLogger(__name__)
NO_SCORES: tuple[dict[str, float], dict[str, int]] = ({}, {})


class Scorer(Protocol):
    """Model scores for a user's state (``decisions.runtime.ml.scoring.Scorer``)."""

    @property
    def versions(self) -> dict[str, int]: ...  # model name -> loaded version

    @property
    def empty(self) -> bool: ...  # no model loaded

    def refresh(self) -> bool: ...

    def score(self, snapshot: dict[str, Any], customer: dict[str, Any],
              ) -> tuple[Mapping[str, float], Mapping[str, int]]: ...

    def count_missing(self, events: int) -> None: ...


class Fired(NamedTuple):
    """A rule that fired for an event, with what the actions need."""

    event: Event
    snapshot: dict[str, Any]
    match: Match
    stacking: bool
    model_versions: dict[str, int]
    caps: tuple[int, int] = (0, 0)  # the ruleset's offers per shopper per day, per week
    experiments: dict[str, str] | None = None  # holdout experiment -> the shopper's group
    held_out: str = ""  # why the shopper is shown nothing from this rule (control group)
    budgets: tuple[Budget, ...] = ()  # the ruleset's and the rule's budgets (offers only)


@dataclass
class Evaluation:
    fact: dict[str, Any] | None  # None: no decision was taken (see ``withheld``)
    fired: list[Fired] = field(default_factory=list)
    withheld: str = ""  # why no rule was evaluated, e.g. "consent withdrawn"


_WITHHELD = Evaluation(None, [], "consent withdrawn")


@dataclass
class Decider:
    engine: RuleEngine
    scorer: Scorer | None = None
    uses_scores: bool = True  # some active rule reads score.<model> (the worker sets it)
    score_errors: int = 0
    _missing: int = 0  # events decided while no model was loaded, not yet reported

    def scores(self, snapshot: dict[str, Any], customer: dict[str, Any],
               ) -> tuple[dict[str, float], dict[str, int]]:
        """The models' scores, or none: decide without scores rather than not at all."""
        scorer = self.scorer
        if scorer is None or not self.uses_scores:
            return NO_SCORES
        if getattr(scorer, "empty", False):
            self._missing += 1
            return NO_SCORES
        try:
            scores, versions = scorer.score(snapshot, customer)
            return dict(scores), dict(versions)
        except Exception:  # a model must never stop decisions
            metrics.SCORER_ERRORS.labels("score").inc()
            self.score_errors += 1
            log.debug("model scoring failed", exc_info=True)
            return NO_SCORES

    def report_missing(self) -> None:
        """Count the events decided without a loaded model (once per batch, not per event)."""
        if self._missing and self.scorer is not None:
            self.scorer.count_missing(self._missing)
        self._missing = 0

    def evaluate(self, event: Event, snapshot: dict[str, Any], customer: dict[str, Any],
                 rulesets: Iterable[CompiledRuleset], *,
                 scores: tuple[dict[str, float], dict[str, int]] | None = None,
                 ) -> Evaluation:
        """What fires for ``event``. ``scores``: given (try-it), else from the scorer."""
        if customer.get("consent") is False:
            return _WITHHELD
        values, versions = self.scores(snapshot, customer) if scores is None else scores
        fact = build_fact(event, snapshot, customer, values)
        fired: list[Fired] = []
        etype = event.type
        for compiled in rulesets:
            if etype not in compiled.types:
                continue
            for match in self.engine.evaluate(compiled, event, fact):
                rule = compiled.rules[match.rule]
                if compiled.holdout is None and rule.holdout is None:
                    f = Fired(event, snapshot, match, compiled.stacking, versions,
                              compiled.caps)
                else:
                    experiments, held_out = groups(compiled, match.rule, event.user_id)
                    f = Fired(event, snapshot, match, compiled.stacking, versions,
                              compiled.caps, experiments, held_out)
                if compiled.budget is not None or rule.budget is not None:
                    f = f._replace(budgets=tuple(
                        b for b in (compiled.budget, rule.budget) if b is not None))
                fired.append(f)
        return Evaluation(fact, fired)

    @staticmethod
    def act(fired: Sequence[Fired], recommender: Recommender | None) -> list[Effect]:
        """The effects of what fired, in order (superseded recommendations included, marked:
        they are decisions to record, not effects to store)."""
        superseded = superseded_recommendations(fired)
        if recommender is not None:  # what the surviving recommendations read, read at once
            recommender.prefetch(
                (f.event.user_id, f.snapshot, str(params.get("strategy", "")))
                for n, f in enumerate(fired)
                for i, action in enumerate(f.match.actions)
                for name, params in action.items()
                if name == "recommend" and i not in superseded.get(n, ()))
        effects: list[Effect] = []
        for n, f in enumerate(fired):
            ctx = Context(f.event, f.snapshot, f.match, f.stacking, recommender, f.caps)
            made = run_actions(ctx, superseded.get(n))
            if f.experiments is not None:  # both groups are recorded the same way
                for effect in made:
                    effect.payload["experiments"] = f.experiments
                    if f.held_out:
                        effect.payload["held_out"] = effect.held_out = f.held_out
            if f.budgets and not f.held_out:  # reserved when stored (runtime.budgets)
                for effect in made:
                    if effect.kind == "offer":
                        effect.budgets = f.budgets
                        # free shipping costs a money budget nothing (grants count)
                        effect.cost = cost_cents(effect.payload.get("discount") or {},
                                                 f.snapshot.get("cart_value"))
            effects.extend(made)
        if recommender is not None:
            recommender.clear()
        return effects


def groups(compiled: CompiledRuleset, rule: str, user_id: str) -> tuple[dict[str, str], str]:
    """The shopper's group in the ruleset's and the rule's holdout experiments, and why
    they are held out ("" when not). Held out of the ruleset's experiment, a shopper is
    not counted in the rule's (they could not have been shown its offer)."""
    experiments: dict[str, str] = {}
    for holdout in (compiled.holdout, compiled.rules[rule].holdout):
        if holdout is None:
            continue
        group = holdout.group(user_id)
        experiments[holdout.experiment] = group
        if group == CONTROL:
            return experiments, holdout.reason()
    return experiments, ""


def superseded_recommendations(fired: Sequence[Fired]) -> dict[int, dict[int, str]]:
    """The recommend actions that a later one for the same user and slot replaces:
    index in ``fired`` -> index of the action -> the surviving action's id. Within one
    event's decision the highest-priority rule's list is the one kept (a later event's
    replaces it: the slot holds the latest decision).

    The survivor's id is its own deterministic one (event, ruleset, rule, kind), so a
    replay of the same batch supersedes the same actions by the same ids."""
    last: dict[tuple[str, str], tuple[int, int]] = {}
    earlier: list[tuple[tuple[int, int], tuple[str, str]]] = []
    for n, f in enumerate(fired):
        if f.held_out:  # shows nothing: it replaces nothing either
            continue
        for i, action in enumerate(f.match.actions):
            params = action.get("recommend")
            if params is None:
                continue
            slot = (f.event.user_id, str(params["slot"]))
            previous = last.get(slot)
            # (two recommend actions of one rule share the rule's action id: both stay)
            if previous is not None and previous[0] != n:
                kept = fired[previous[0]]
                if kept.event.event_id == f.event.event_id \
                        and kept.match.priority > f.match.priority:
                    # one decision: the higher-priority rule keeps the slot (#23)
                    earlier.append(((n, i), slot))
                    continue
                earlier.append((previous, slot))
            last[slot] = (n, i)
    if not earlier:
        return {}
    out: dict[int, dict[int, str]] = {}
    for (m, i), slot in earlier:
        n, _ = last[slot]
        match = fired[n].match
        out.setdefault(m, {})[i] = action_id(fired[n].event.event_id, match.ruleset,
                                             match.rule, "recommendation")
    return out
