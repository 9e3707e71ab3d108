"""The registry of named action handlers: what a fired rule does.

A handler turns a ``Match`` into effects (offers, recommendations, segment changes).
Every effect carries the event id, ruleset, version, rule and a deterministic id, so a
replayed event writes the same effect again (idempotent), never a second one.

A recommendation that a later event of the same batch replaces (same user and slot: the
slot holds only the latest) is not computed: ``run_actions`` records it as superseded
(``Effect.superseded_by``, the surviving action's id), for the decision log only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from decisions.core.events import Event, format_ts
from decisions.runtime.engine import Match
from decisions.runtime.offers import action_id
from decisions.runtime.recommend import Aim, Answer, Recommender
from rulesets.budget import Budget


@dataclass
class Effect:
    kind: str  # offer | recommendation | segment
    user_id: str
    action_id: str
    match: Match
    event: Event
    payload: dict[str, Any]
    # a recommendation replaced within its batch by this action id: logged as a decision,
    # never computed, stored in Redis or published
    superseded_by: str | None = None
    caps: tuple[int, int] = (0, 0)  # the ruleset's offers per shopper per day, per week
    held_out: str = ""  # the shopper is in a holdout's control group: recorded, not stored
    budgets: tuple[Budget, ...] = ()  # an offer's budgets (ruleset's, rule's) to reserve
    cost: int = 0  # what the offer costs its budgets, in cents (rulesets.budget)
    refused: str = ""  # why a budget or a cap refused it: recorded, not stored or published

    @property
    def stored(self) -> bool:
        """Stored in Redis and published (else a decision to record only)."""
        return self.superseded_by is None and not self.held_out and not self.refused


@dataclass
class Context:
    event: Event
    snapshot: dict[str, Any]
    match: Match
    stacking: bool
    recommender: Recommender | None
    caps: tuple[int, int] = (0, 0)
    effects: list[Effect] = field(default_factory=list)

    def add(self, kind: str, payload: dict[str, Any], superseded_by: str | None = None) -> None:
        aid = action_id(self.event.event_id, self.match.ruleset, self.match.rule, kind)
        self.effects.append(Effect(kind, self.event.user_id, aid, self.match, self.event,
                                   payload, superseded_by, self.caps))


Handler = Callable[[Context, dict[str, Any]], None]
HANDLERS: dict[str, Handler] = {}


def handler(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        return fn

    return register


def _reason(match: Match) -> str:
    parts = [f"{k}={v}" for k, v in match.reason.items() if not isinstance(v, list)]
    return f"rule {match.rule}: " + ", ".join(parts)


def _offer(ctx: Context, params: dict[str, Any], kind: str, terms: dict[str, Any]) -> None:
    """Store an offer of ``kind`` (``terms`` under that name): every offer-making action's
    common part, stored, capped and served alike (decisions/runtime/offers.py)."""
    minutes = float(params.get("expires_minutes", 60))
    expires = ctx.event.ts + timedelta(minutes=minutes)
    for key in ("code", "min_basket"):
        if key in params:
            terms[key] = params[key]
    offer: dict[str, Any] = {
        "offer_id": action_id(ctx.event.event_id, ctx.match.ruleset, ctx.match.rule, "offer"),
        "rule": ctx.match.rule,
        "ruleset": ctx.match.ruleset,
        "ruleset_version": ctx.match.version,
        "kind": kind,
        kind: terms,
        "priority": ctx.match.priority,
        "stackable": ctx.stacking,
        "expires_at": format_ts(expires),
        "expires_ms": int(expires.timestamp() * 1000),
        "created_at": format_ts(ctx.event.ts),
        "event_id": ctx.event.event_id,
        "reason": _reason(ctx.match),
        # 0 = no 30-day cap; one active offer per rule and user always holds
        "per_user_cap": int(params.get("per_user_cap", 0)),
    }
    if params.get("max_per_user_ever"):  # offers of this rule per user, ever (0: no cap)
        offer["max_per_user_ever"] = int(params["max_per_user_ever"])
    if params.get("products"):
        offer["products"] = list(params["products"])
    ctx.add("offer", offer)


@handler("discount")
def discount(ctx: Context, params: dict[str, Any]) -> None:
    terms: dict[str, Any] = (
        {"type": "percent", "value": params["percent"]} if "percent" in params
        else {"type": "amount", "value": params["amount"]}
    )
    _offer(ctx, params, "discount", terms)


@handler("free_shipping")
def free_shipping(ctx: Context, params: dict[str, Any]) -> None:
    _offer(ctx, params, "free_shipping", {})


def aim_of(params: dict[str, Any], event: Event, recommender: Recommender | None) -> Aim:
    """Where the recommend action aims, with the event's product, category and price."""
    props = event.properties
    raw_product, raw_category = props.get("product_id"), props.get("category")
    product = raw_product if isinstance(raw_product, str) else ""
    category = str(params.get("category") or "")
    if category == "this_category":  # the event's (else its product's in the catalog)
        category = raw_category if isinstance(raw_category, str) else ""
        if not category and recommender is not None:
            category = recommender.categories.get(product, "")
    price = props.get("price")
    return Aim(
        category=category,
        products=tuple(params.get("products") or ()),
        price=str(params.get("price") or ""),
        reference=product,
        reference_price=float(price) if isinstance(price, int | float)
        and not isinstance(price, bool) else None,
    )


@handler("recommend")
def recommend(ctx: Context, params: dict[str, Any]) -> None:
    count = int(params.get("count", 6))
    strategy = str(params["strategy"])
    answer = Answer([], strategy, strategy, ())
    if ctx.recommender is not None:
        answer = ctx.recommender.answer(ctx.event.user_id, ctx.snapshot, strategy, count,
                                        aim_of(params, ctx.event, ctx.recommender))
    expires = ctx.event.ts + timedelta(hours=24)
    payload: dict[str, Any] = {
        "slot": params["slot"],
        "products": answer.products,
        "strategy": answer.strategy,
        "rule": ctx.match.rule,
        "ruleset": ctx.match.ruleset,
        "ruleset_version": ctx.match.version,
        "event_id": ctx.event.event_id,
        "expires_at": format_ts(expires),
        "expires_ms": int(expires.timestamp() * 1000),
        "reason": _reason(ctx.match),
        # which strategy answered: the one asked for, or a fallback (#23)
        "requested_strategy": strategy,
        "fallback": answer.fallback,
        "filled_by": list(answer.filled_by),
    }
    for key in ("category", "price"):
        if params.get(key):
            payload[key] = params[key]
    ctx.add("recommendation", payload)


@handler("add_segment")
def add_segment(ctx: Context, params: dict[str, Any]) -> None:
    ctx.add("segment", {"segment": params["segment"], "rule": ctx.match.rule,
                        "ruleset": ctx.match.ruleset, "ruleset_version": ctx.match.version})


def superseded_recommendation(ctx: Context, params: dict[str, Any], by: str) -> None:
    """A recommendation a later one of the batch replaces: what fired, no products."""
    ctx.add("recommendation", {
        "slot": params["slot"],
        "strategy": str(params["strategy"]),
        "rule": ctx.match.rule,
        "ruleset": ctx.match.ruleset,
        "ruleset_version": ctx.match.version,
        "event_id": ctx.event.event_id,
        "superseded_by": by,  # (the row's reason column holds why the rule fired)
    }, superseded_by=by)


def run_actions(ctx: Context, superseded: dict[int, str] | None = None) -> list[Effect]:
    """``superseded``: by action index, the id of the recommendation that replaces it."""
    for i, action in enumerate(ctx.match.actions):
        ((name, params),) = action.items()
        if superseded and i in superseded:
            superseded_recommendation(ctx, params, superseded[i])
        else:
            HANDLERS[name](ctx, params)
    return ctx.effects  # (granted: counted by the worker once stored)
