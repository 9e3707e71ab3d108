"""'Try it': what a ruleset would decide for one event, with no side effect.

A thin layer over ``decisions.simulate.dryrun``: it reads the pasted event and profile, and for a
picked user their live profile (``dryrun.live_state``: copied to scratch keys, never
changed) and their customer record. A pasted profile (``state`` / ``customer`` /
``scores``) overrides what the user's records hold. With Redis, offers are checked
against what the live budgets have spent (nothing is reserved), and for a picked user
against their live offers and caps (the offer store's own script, writing nothing).
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import Engine

from decisions.core.errors import FieldError, ValidationError
from decisions.core.events import format_ts, parse_event
from decisions.runtime.budgets import BudgetStore
from decisions.runtime.customers import load_customers
from decisions.runtime.offers import OfferStore, select_offers
from decisions.simulate.dryrun import DryRunResult, condition_fields, dry_run, live_state

SAMPLE_EVENT = {"type": "add_to_cart", "user_id": "u-try",
                "properties": {"product_id": "p-1", "price": 250.0, "quantity": 1}}
SAMPLE_PROFILE = {"state": {"cart_value": 250, "since_page_checkout": 60},
                  "customer": {"tier": "gold"}}
PROFILE_KEYS = ("state", "customer", "scores")


def parse_profile(profile: Any) -> dict[str, dict[str, Any]]:
    """``{"state": {...}, "customer": {...}, "scores": {...}}``; a bare object is state."""
    if profile is None or profile == {}:
        return {}
    if not isinstance(profile, dict):
        raise ValidationError("invalid profile", [FieldError("profile", "expected a JSON object")])
    if not set(PROFILE_KEYS) & set(profile):
        profile = {"state": profile}
    for key, value in profile.items():
        if key not in PROFILE_KEYS:
            raise ValidationError("invalid profile", [FieldError(
                f"profile.{key}", "unknown key (expected state, customer, scores)")])
        if not isinstance(value, dict):
            raise ValidationError("invalid profile", [FieldError(
                f"profile.{key}", "expected a JSON object")])
    return profile


def try_event(document: dict[str, Any], event: Any, profile: dict[str, dict[str, Any]],
              now: datetime, *, user_id: str = "", client: redis.Redis | None = None,
              db: Engine | None = None, global_caps: tuple[int, int] = (0, 0),
              ) -> DryRunResult:
    """Dry-run ``document`` on ``event`` at ``now``; with ``user_id``, on that user's
    live profile and customer record, offers and caps (read only; ``global_caps``: the
    offers per shopper per day and week across rulesets, the worker's settings)."""
    if not isinstance(event, dict):
        raise ValidationError("invalid event", [FieldError("event", "expected a JSON object")])
    event = {"event_id": "try-" + uuid.uuid4().hex[:8], **event}
    state = profile.get("state")
    customer = profile.get("customer")
    if user_id and client is not None and db is not None:
        event["user_id"] = user_id
        parsed = parse_event({**event, "ts": format_ts(now)}, prefix="event.", internal=True)
        state = {**live_state(client, user_id, parsed, condition_fields(document)),
                 **(state or {})}
        customer = {**load_customers(db, [user_id]).get(user_id, {}), **(customer or {})}
    spent = None
    if client is not None and (document.get("budget")
                               or any(r.get("budget") for r in document.get("rules") or [])):
        try:  # what the live budgets have spent (a dry run without Redis: nothing)
            spent = BudgetStore(client).spent(str(document.get("name")))
        except (redis.RedisError, OSError):
            spent = None
    result = dry_run(document, event, state=state, customer=customer,
                     scores=profile.get("scores"), now=now, budgets_spent=spent)
    if user_id and client is not None:
        return apply_caps(result, OfferStore(client, *global_caps), user_id, now)
    return result


def apply_caps(result: DryRunResult, store: OfferStore, user_id: str,
               now: datetime) -> DryRunResult:
    """The shopper's live offers and caps (an active offer of the rule, per-shopper, once
    ever, frequency caps): an offer they would refuse leaves the result, with why."""
    now_ms = int(now.timestamp() * 1000)
    capped: dict[str, str] = {}
    for effect in result.effects:
        if effect.kind != "offer":
            continue
        try:
            why = store.check_offer(user_id, effect.payload, now_ms, effect.caps)
        except (redis.RedisError, OSError):
            return result  # Redis away: the result stands as a dry run
        if why:
            effect.refused = effect.payload["refused"] = why
            capped[effect.match.rule] = why
    if not capped:
        return result
    effects = [e for e in result.effects if not e.refused]
    offers = select_offers([dict(e.payload) for e in effects if e.kind == "offer"], result.now)
    return replace(result, effects=effects, offers=offers, capped=capped)
