"""Backtests: replay a period of archived events through a draft, in a background thread.

The archive (``EventArchive.read``) is replayed through the same Lua state code the
worker runs (``decisions.runtime.state.replay``) under a scratch key prefix, so each event is
judged on the features the live worker computed for it; the compiled draft is evaluated
on each, and per rule we count fires, offers, distinct users and the discount granted.
Nothing is written but the scratch keys, which are deleted at the end (or on cancel).

Offers follow the live store's cap: while a user holds an unexpired offer of a rule
(``expires_minutes``, default 60, in event time) the rule grants that user no new one.
Discount granted: ``percent`` × the cart value at that event, or the ``amount``.
Model scores are not replayed: conditions on ``score.*`` never match in a backtest.

Budgets (``rulesets.budget``) are applied from nothing at the start of the period, in
event time, as the worker reserves them: an offer that would pass a budget is not granted
(``RuleTally.budget_refused``). Per budget, ``BudgetTally`` says what it would have allowed:
"budget promo ($500.00 of discount) would have covered 120 of 180 grants, spent by
2026-12-03 14:02 UTC".
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import Engine

from decisions.core.db import utcnow
from decisions.core.events import Event
from decisions.runtime.archive import EventArchive
from decisions.runtime.customers import load_customers
from decisions.runtime.decide import NO_SCORES, Decider
from decisions.runtime.engine import RuleEngine
from decisions.runtime.state import clear_scratch, replay, replay_features
from rulesets.budget import Budget, cost_cents, money
from rulesets.compile import compile_ruleset
from rulesets.language import ACTION_CATALOG

log = logging.getLogger(__name__)
BATCH = 500
KEEP = 20  # finished backtests kept in memory


@dataclass
class RuleTally:
    rule: str
    fires: int = 0
    offers: int = 0
    discount: float = 0.0
    users: set[str] = field(default_factory=set)
    held_out: int = 0  # fires for shoppers in a holdout's control group (shown nothing)
    capped: int = 0  # offers a frequency cap of the ruleset (or max_per_user_ever) refused
    budget_refused: int = 0  # offers a spent budget refused


@dataclass
class BudgetTally:
    """What one budget would have allowed over the period (from nothing at its start)."""

    scope: str  # "ruleset" or "rule <name>"
    budget: Budget
    wanted: int = 0  # offers that reached the budget (after holdouts, holding and caps)
    covered: int = 0  # of them, granted
    spent_cents: int = 0
    spent_at: datetime | None = None  # event time of the first offer it refused

    def line(self) -> str:
        said = (f"{self.scope}: {self.budget.describe()} would have covered {self.covered} "
                f"of {self.wanted} grants")
        if self.spent_at is not None:
            return said + f", spent by {self.spent_at:%Y-%m-%d %H:%M} UTC"
        left = [f"{money(self.budget.amount_cents - self.spent_cents)} left"
                if self.budget.amount_cents else "",
                f"{self.budget.grants - self.covered} offers left" if self.budget.grants else ""]
        return said + ", not spent (" + ", ".join(x for x in left if x) + ")"


@dataclass
class Backtest:
    ruleset: str
    source: str  # "draft" or "version N"
    start: datetime
    end: datetime
    started_by: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    total: int = 0
    processed: int = 0
    status: str = "running"  # running | done | cancelled | failed
    error: str = ""
    started_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None
    tallies: dict[str, RuleTally] = field(default_factory=dict)
    budgets: dict[str, BudgetTally] = field(default_factory=dict)  # by campaign
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def percent(self) -> int:
        if self.status == "done":
            return 100
        return int(100 * self.processed / self.total) if self.total else 0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "processed": self.processed,
                "total": self.total, "percent": self.percent, "error": self.error}


class BacktestRegistry:
    """Backtests of this process, by id (progress lives in memory; the page polls it)."""

    def __init__(self) -> None:
        self._runs: dict[str, Backtest] = {}
        self._lock = threading.Lock()

    def start(self, run: Backtest, work: Callable[[Backtest], None]) -> Backtest:
        with self._lock:
            finished = sorted((r for r in self._runs.values() if r.status != "running"),
                              key=lambda r: r.started_at)
            for old in finished[: max(0, len(finished) - KEEP)]:
                self._runs.pop(old.id, None)
            self._runs[run.id] = run
        threading.Thread(target=work, args=(run,), name=f"backtest-{run.id}", daemon=True).start()
        return run

    def running(self) -> int:
        with self._lock:
            return sum(1 for r in self._runs.values() if r.status == "running")

    def get(self, run_id: str) -> Backtest | None:
        with self._lock:
            return self._runs.get(run_id)

    def of_ruleset(self, name: str) -> list[Backtest]:
        with self._lock:
            runs = [r for r in self._runs.values() if r.ruleset == name]
        return sorted(runs, key=lambda r: r.started_at, reverse=True)


def discount_value(params: dict[str, Any], snapshot: dict[str, Any]) -> float:
    if "amount" in params:
        return float(params["amount"])
    cart = snapshot.get("cart_value") or 0
    return float(params.get("percent", 0)) * float(cart) / 100.0


class Runner:
    """Runs one backtest; ``engine_lock`` serialises use of the shared rule engine."""

    def __init__(self, db: Engine, client: redis.Redis, engine: RuleEngine,
                 engine_lock: threading.Lock, document: dict[str, Any]) -> None:
        self.db = db
        self.client = client
        self.engine = engine
        self.engine_lock = engine_lock
        self.document = document

    def __call__(self, run: Backtest) -> None:
        prefix = f"bt-{run.id}-"
        status, error = "done", ""
        try:
            self._run(run, prefix)
            if run.cancel.is_set():
                status = "cancelled"
        except Exception as exc:  # shown on the page; the thread must not die silently
            log.exception("backtest %s failed", run.id)
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        try:
            clear_scratch(self.client, prefix)
        except Exception:  # noqa: BLE001 - best effort: the keys are scratch only
            log.warning("backtest %s: scratch keys %s* not cleared", run.id, prefix)
        # the run is over only once its scratch keys are gone
        run.finished_at = utcnow()
        run.error = error
        run.status = status

    def _run(self, run: Backtest, prefix: str) -> None:
        archive = EventArchive(self.db)
        run.total = archive.count(run.start, run.end)
        compiled = compile_ruleset(self.document, 0)
        for rule in compiled.rules:
            run.tallies[rule] = RuleTally(rule)
        for scope, budget in [("ruleset", compiled.budget),
                              *((f"rule {r.name}", r.budget) for r in compiled.rules.values())]:
            if budget is not None:
                run.budgets.setdefault(budget.campaign, BudgetTally(scope, budget))
        holding: dict[tuple[str, str], int] = {}  # (user, rule) -> offer expiry (ms)
        self._granted: dict[str, list[int]] = {}  # user -> offer times (ms), for the caps
        self._ever: dict[tuple[str, str], int] = {}  # (user, rule) -> offers in the period
        customers: dict[str, dict[str, Any]] = {}
        pending: list[tuple[Event, dict[str, Any]]] = []
        spec = replay_features(path for rule in compiled.rules.values() for path in rule.fields)
        for item in replay(archive.read(run.start, run.end), self.client, prefix, batch=BATCH,
                           wanted=spec):
            if run.cancel.is_set():
                return
            pending.append(item)
            if len(pending) >= BATCH:
                self._evaluate(run, compiled, pending, customers, holding)
        if pending and not run.cancel.is_set():
            self._evaluate(run, compiled, pending, customers, holding)

    def _evaluate(self, run: Backtest, compiled: Any, items: list[tuple[Event, dict[str, Any]]],
                  customers: dict[str, dict[str, Any]],
                  holding: dict[tuple[str, str], int]) -> None:
        unknown = list({e.user_id for e, _ in items if e.user_id not in customers})
        found = load_customers(self.db, unknown)
        for uid in unknown:
            customers[uid] = found.get(uid, {})
        decider = Decider(self.engine)
        granted = self._granted
        with self.engine_lock:
            for event, snapshot in items:
                evaluation = decider.evaluate(event, snapshot, customers[event.user_id],
                                              [compiled], scores=NO_SCORES)
                for fired in evaluation.fired:
                    match = fired.match
                    tally = run.tallies[match.rule]
                    tally.fires += 1
                    if fired.held_out:
                        tally.held_out += 1
                        continue
                    for action in match.actions:
                        ((name, params),) = action.items()
                        if ACTION_CATALOG[name].effect != "offer":
                            continue
                        key = (event.user_id, match.rule)
                        if holding.get(key, 0) > event.ts_ms:
                            continue
                        ever = int(params.get("max_per_user_ever") or 0)
                        if ever and self._ever.get(key, 0) >= ever:
                            tally.capped += 1
                            continue
                        if capped(granted.setdefault(event.user_id, []), compiled.caps,
                                  event.ts_ms):
                            tally.capped += 1
                            continue
                        if fired.budgets and not reserve(
                                run.budgets, fired.budgets, event,
                                cost_cents(terms(params), snapshot.get("cart_value"))):
                            tally.budget_refused += 1
                            continue
                        self._ever[key] = self._ever.get(key, 0) + 1
                        holding[key] = event.ts_ms + int(
                            float(params.get("expires_minutes", 60)) * 60_000)
                        tally.offers += 1
                        tally.users.add(event.user_id)
                        tally.discount += discount_value(params, snapshot)
        run.processed += len(items)
        items.clear()


def capped(times: list[int], caps: tuple[int, int], now_ms: int) -> bool:
    """The ruleset's frequency caps in event time, as the offer store applies them in
    wall-clock time: refused, or granted and counted in ``times``."""
    per_day, per_week = caps
    if per_day or per_week:
        times[:] = [t for t in times if t > now_ms - 7 * 86_400_000]
        today = sum(1 for t in times if t > now_ms - 86_400_000)
        if (per_day and today >= per_day) or (per_week and len(times) >= per_week):
            return True
        times.append(now_ms)
    return False


def terms(params: dict[str, Any]) -> dict[str, Any]:
    """A discount action's parameters as the offer's terms (``actions.discount``)."""
    if "amount" in params:
        return {"type": "amount", "value": params["amount"]}
    return {"type": "percent", "value": params.get("percent", 0),
            "min_basket": params.get("min_basket")}


def reserve(tallies: dict[str, BudgetTally], budgets: tuple[Budget, ...], event: Event,
            cost: int) -> bool:
    """The budgets' reservation as the worker's script makes it, in event time: granted
    (and counted in every budget) or refused (and the spent ones marked)."""
    involved = {b.campaign: tallies.setdefault(b.campaign, BudgetTally(b.campaign, b))
                for b in budgets}
    for t in involved.values():
        t.wanted += 1
    refused = False
    for b in budgets:
        t = involved[b.campaign]
        if (b.grants and t.covered + 1 > b.grants) or \
                (b.amount_cents and t.spent_cents + cost > b.amount_cents):
            refused = True
            if t.spent_at is None:
                t.spent_at = event.ts
    if refused:
        return False
    for t in involved.values():
        t.covered += 1
        t.spent_cents += cost
    return True
