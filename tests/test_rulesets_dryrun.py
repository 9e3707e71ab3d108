"""Dry runs: what a version would decide for one event, at a chosen 'now', with no side effect."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from decisions.core import keys
from decisions.core.errors import ValidationError
from decisions.core.events import parse_event
from decisions.runtime.state import StateStore
from decisions.simulate.dryrun import dry_run, dry_run_live
from rulesets.compile import compile_ruleset
from rulesets.document import read_file
from rulesets.validate import validate
from tests.helpers import ROOT, event

STARTER = ROOT / "rulesets" / "starter"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def starter(name: str) -> dict[str, Any]:
    data, _ = read_file(STARTER / f"{name}.yaml")
    return dict(data)


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def cart_event(product: str = "p-1", price: float = 120.0) -> dict[str, Any]:
    return {"type": "add_to_cart",
            "properties": {"product_id": product, "price": price, "quantity": 1}}


def test_past_and_future_now_decide_differently() -> None:
    """The checkout was viewed at 11:58. At 12:00 it is within 5 minutes; at 12:10 it is not."""
    state = {"cart_value": 250.0, "cart_items": 2, "last_page_checkout_at": "2026-11-26T11:58:00Z"}
    hit = dry_run(starter("storefront"), cart_event(), state=state, now=NOW)
    assert hit.fired == ["high-value-cart"]
    assert hit.version is None  # a draft
    assert hit.matches[0].reason == {"event.type": "add_to_cart", "state.cart_value": 250.0,
                                     "state.since_page_checkout": 120.0}
    assert hit.event["ts"] == "2026-11-26T12:00:00.000Z"
    [offer] = hit.offers
    assert offer["discount"] == {"type": "percent", "value": 10, "code": "CART10"}
    assert offer["expires_at"] == "2026-11-26T13:00:00.000Z"  # an hour after the event
    later = dry_run(starter("storefront"), cart_event(), state=state,
                    now=NOW + timedelta(minutes=10))
    assert later.fired == [] and later.offers == []
    trace = next(t for t in later.rules if t.rule == "high-value-cart")
    assert trace.fired is False and trace.conditions is not None
    assert [c["result"] for c in trace.conditions["all"]] == [True, True, False]
    assert trace.conditions["all"][2]["actual"] == 720.0  # 12 minutes
    # before the checkout view happened, there is no such visit at all
    earlier = dry_run(starter("storefront"), cart_event(), state=state,
                      now=NOW - timedelta(minutes=5))
    assert earlier.fired == []
    assert earlier.fact.get("state.since_page_checkout") is None


def test_active_window_is_checked_against_now() -> None:
    doc = {"name": "sale", "rules": [{
        "name": "black-friday", "active": {"from": "2026-11-27T00:00:00Z",
                                           "until": "2026-11-28T00:00:00Z"},
        "when": {"field": "event.type", "op": "eq", "value": "page_view"},
        "then": [{"discount": {"percent": 30}}]}]}
    view = {"type": "page_view", "properties": {"page": "home"}}
    ran = {at: dry_run(doc, view, now=datetime(2026, 11, d, h, tzinfo=UTC)).fired
           for at, (d, h) in {"before": (26, 23), "during": (27, 12), "after": (28, 0)}.items()}
    assert ran == {"before": [], "during": ["black-friday"], "after": []}
    trace = dry_run(doc, view, now=NOW).rules[0]
    assert (trace.in_window, trace.event_type_ok, trace.conditions["result"]) == (  # type: ignore[index]
        False, True, True)


def test_timeline_counts_windows_from_now() -> None:
    doc = {"name": "t", "rules": [{
        "name": "busy-browser",
        "when": {"all": [{"field": "event.type", "op": "eq", "value": "product_view"},
                         {"field": "state.count_product_view_1h", "op": "gte", "value": 3}]},
        "then": [{"recommend": {"strategy": "covisit", "slot": "home"}}]}]}
    times = [iso(NOW - timedelta(minutes=m)) for m in (5, 20, 50, 90)]
    view = {"type": "product_view", "properties": {"product_id": "p-1"}}
    at_noon = dry_run(doc, view, state={"timeline": {"product_view": times}}, now=NOW)
    assert at_noon.fired == ["busy-browser"]
    assert at_noon.fact["state.count_product_view_5m"] == 1
    assert at_noon.fact["state.count_product_view_1h"] == 3
    assert at_noon.fact["state.since_product_view"] == 300
    assert at_noon.recommendations[0]["products"] == []  # no recommender in a dry run
    assert at_noon.recommendations[0]["slot"] == "home"
    later = dry_run(doc, view, state={"timeline": {"product_view": times}},
                    now=NOW + timedelta(minutes=30))
    assert later.fact["state.count_product_view_1h"] == 2 and later.fired == []


def test_win_back_and_welcome_starters() -> None:
    doc = starter("storefront")
    home = {"type": "page_view", "properties": {"page": "home"}}
    lapsed = {"order_count": 3, "last_purchase_at": "2026-08-01T10:00:00Z"}
    assert dry_run(doc, home, state=lapsed, now=NOW).fired == ["win-back"]
    assert dry_run(doc, home, state=lapsed, now=datetime(2026, 9, 1, tzinfo=UTC)).fired == []
    assert dry_run(doc, home, state={"order_count": 0, "last_purchase_at": "2026-08-01T10:00:00Z"},
                   now=NOW).fired == []
    newcomer = {"session_page_views": 3, "first_seen_at": "2026-11-26T11:50:00Z"}
    welcome = dry_run(doc, home, state=newcomer, now=NOW)
    assert welcome.fired == ["first-visit-welcome"]
    assert welcome.offers[0]["discount"]["code"] == "WELCOME5"
    # the same visitor two days later is no longer on a first visit
    assert dry_run(doc, home, state=newcomer, now=NOW + timedelta(days=2)).fired == []


def test_sequence_and_cart_abandonment_starters() -> None:
    doc = starter("storefront")
    viewed = {"cart_items": 1, "cart_value": 40.0, "product_viewed_at": "2026-11-26T11:55:00Z"}
    assert dry_run(doc, cart_event(price=40.0), state=viewed, now=NOW).fired == [
        "viewed-then-added"]
    assert dry_run(doc, cart_event(price=40.0), state=viewed,
                   now=NOW + timedelta(minutes=6)).fired == []  # 11 minutes after the view
    timer = {"type": "timer", "properties": {"timer": "idle_30m"}}
    fired = dry_run(doc, timer, state={"cart_items": 2, "cart_value": 80.0}, now=NOW)
    assert fired.fired == ["cart-abandonment"]
    assert fired.offers[0]["discount"] == {"type": "amount", "value": 5, "code": "COMEBACK5",
                                           "min_basket": 50}
    assert dry_run(doc, timer, state={"cart_items": 0}, now=NOW).fired == []


def test_priority_and_stacking_decide_which_offers_are_shown() -> None:
    doc = starter("storefront")
    state = {"cart_value": 250.0, "cart_items": 2, "last_page_checkout_at": "2026-11-26T11:59:00Z",
             "product_viewed_at": "2026-11-26T11:58:00Z"}
    both = dry_run(doc, cart_event(), state=state, now=NOW)
    assert both.fired == ["high-value-cart", "viewed-then-added"]  # highest priority first
    assert len(both.effects) == 2
    assert [o["rule"] for o in both.offers] == ["high-value-cart"]  # not stackable: one wins
    stacking = validate({**doc, "stacking": True})
    stacked = dry_run(stacking, cart_event(), state=state, now=NOW)
    assert [o["rule"] for o in stacked.offers] == ["high-value-cart", "viewed-then-added"]


def test_score_rules_never_fire_without_a_model() -> None:
    doc = starter("predictive")
    view = {"type": "page_view", "properties": {"page": "product"}}
    cart = {"cart_items": 2, "cart_value": 90.0}
    lapsed = {"order_count": 2, "last_purchase_at": "2026-09-01T00:00:00Z"}
    assert dry_run(doc, view, state={**cart, **lapsed}, now=NOW).fired == []
    hesitant = dry_run(doc, view, state=cart, scores={"purchase_intent": 0.5}, now=NOW)
    assert hesitant.fired == ["hesitant-buyer"]
    assert hesitant.offers[0]["expires_at"] == "2026-11-26T12:30:00.000Z"
    assert dry_run(doc, view, state=cart, scores={"purchase_intent": 0.9}, now=NOW).fired == []
    assert dry_run(doc, view, state=lapsed, scores={"churn_risk": 0.8}, now=NOW).fired == [
        "churn-risk-win-back"]
    assert dry_run(doc, view, state=lapsed, scores={"churn_risk": 0.8},
                   now=datetime(2026, 10, 1, tzinfo=UTC)).fired == []  # not lapsed yet


def test_a_published_version_keeps_its_number() -> None:
    compiled = compile_ruleset(validate(starter("storefront")), 7)
    result = dry_run(compiled, {"type": "page_view", "properties": {"page": "home"}},
                     state={"order_count": 1, "last_purchase_at": "2026-01-01T00:00:00Z"}, now=NOW)
    assert result.version == 7 and result.offers[0]["ruleset_version"] == 7
    body = result.to_dict()
    assert body["fired"][0]["rule"] == "win-back" and body["now"] == "2026-11-26T12:00:00.000Z"


@pytest.mark.parametrize(("kwargs", "fields"), [
    ({"state": {"cart_vlue": 3}}, ["state.cart_vlue"]),
    ({"state": {"cart_value": "3", "recent_products": [1]}},
     ["state.cart_value", "state.recent_products"]),
    ({"state": {"last_purchase_at": "yesterday", "timeline": {"hover": []}}},
     ["state.timeline.hover", "state.last_purchase_at"]),
    ({"customer": {"tier": 3, "Shoe-Size": 44}}, ["customer.tier", "customer.Shoe-Size"]),
    ({"scores": {"Churn": 0.5, "intent": "high"}}, ["scores.Churn", "scores.intent"]),
    ({"event": {"type": "add_to_cart", "properties": {"product_id": "p", "price": "x",
                                                      "quantity": 1}}},
     ["event.properties.price"]),
    ({"event": {"type": "teleport"}}, ["event.type"]),
])
def test_bad_inputs_are_named_by_path(kwargs: dict[str, Any], fields: list[str]) -> None:
    ev = kwargs.pop("event", {"type": "page_view", "properties": {"page": "home"}})
    with pytest.raises(ValidationError) as caught:
        dry_run(starter("storefront"), ev, now=NOW, **kwargs)
    assert [d.field for d in caught.value.details] == fields


def test_a_bad_document_is_reported_not_run() -> None:
    doc = starter("storefront")
    doc["rules"][0]["when"]["all"][1]["value"] = "two hundred"
    with pytest.raises(ValidationError) as caught:
        dry_run(doc, cart_event(), now=NOW)
    assert [d.field for d in caught.value.details] == ["rules[0].when.all[1].value"]


CONDITIONS: list[dict[str, Any]] = [
    {"field": "state.cart_value", "op": "gt", "value": 100},
    {"field": "state.cart_value", "op": "between", "value": [50, 150]},
    {"field": "state.since_page_checkout", "op": "within", "value": 300},
    {"field": "customer.tier", "op": "in", "value": ["gold", "silver"]},
    {"field": "customer.tier", "op": "not_in", "value": ["gold"]},
    {"field": "customer.country", "op": "prefix", "value": "D"},
    {"field": "user.segments", "op": "contains", "value": "vip"},
    {"field": "score.churn_risk", "op": "exists"},
    {"field": "score.churn_risk", "op": "lte", "value": 0.5},
    {"field": "customer.consent", "op": "eq", "value": True},
    {"field": "state.order_count", "op": "ne", "value": 0},
]


def _random_tree(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    roll = rng.random()
    if depth >= 2 or roll < 0.4:
        return dict(rng.choice(CONDITIONS))
    if roll < 0.55:
        return {"not": _random_tree(rng, depth + 1)}
    kind = "all" if roll < 0.8 else "any"
    return {kind: [_random_tree(rng, depth + 1) for _ in range(rng.randint(1, 3))]}


def test_explanations_agree_with_durable_rules() -> None:
    """The condition traces (pure Python) and the engine's decision (durable_rules) agree,
    including on missing values and under `not`."""
    rng = random.Random(7)
    rules = [{"name": f"r{i}", "when": _random_tree(rng), "then": [{"add_segment":
                                                                    {"segment": "s"}}]}
             for i in range(40)]
    doc = validate({"name": "fuzz", "rules": rules})
    view = {"type": "page_view", "properties": {"page": "home"}}
    fired_somewhere = set()
    for _ in range(60):
        state: dict[str, Any] = {"cart_value": rng.choice([0, 75, 120, 400]),
                                 "order_count": rng.choice([0, 2])}
        if rng.random() < 0.5:
            state["last_page_checkout_at"] = iso(NOW - timedelta(seconds=rng.choice([30, 900])))
        customer = {k: v for k, v in (("tier", rng.choice([None, "gold", "bronze"])),
                                      ("country", rng.choice([None, "DE", "FR"])),
                                      ("consent", rng.choice([None, True, False])),
                                      ("segments", rng.choice([[], ["vip"]]))) if v is not None}
        scores = rng.choice([{}, {"churn_risk": 0.2}, {"churn_risk": 0.9}])
        result = dry_run(doc, view, state=state, customer=customer, scores=scores, now=NOW)
        if customer.get("consent") is False:  # as the worker decides: nothing at all
            assert result.withheld == "consent withdrawn" and result.fired == []
            continue
        for trace in result.rules:
            assert trace.conditions is not None
            assert trace.fired == trace.conditions["result"], (trace.rule, trace.conditions)
        fired_somewhere |= set(result.fired)
    assert len(fired_somewhere) > 20  # the fuzzing exercised real matches


def test_live_dry_run_reads_the_profile_and_writes_nothing(redis_client: redis.Redis) -> None:
    user = "u-live"
    store = StateStore(redis_client)
    history = [
        event("page_view", user, NOW - timedelta(minutes=3), page="checkout"),
        event("product_view", user, NOW - timedelta(minutes=2), product_id="p-9",
              category="shoes"),
        event("add_to_cart", user, NOW - timedelta(minutes=1), product_id="p-9", price=150.0,
              quantity=1, category="shoes"),
    ]
    store.apply_batch([parse_event(e) for e in history])
    before = {k: redis_client.dump(k) for k in redis_client.keys("*")}
    result = dry_run_live(redis_client, user, starter("storefront"),
                          cart_event("p-9", 150.0), now=NOW)
    assert result.fact["state.cart_value"] == 300.0  # one p-9 in the cart, this adds another
    assert result.fact["state.since_same_product_view"] == 120
    assert result.fired == ["high-value-cart", "viewed-then-added"]
    after = {k: redis_client.dump(k) for k in redis_client.keys("*")}
    assert after == before  # not one key added, removed or changed
    assert redis_client.hget(keys.state(user), "last_ts") is not None
    # an hour later the checkout visit is too old for the high-value rule
    later = dry_run_live(redis_client, user, starter("storefront"), cart_event("p-9", 150.0),
                         now=NOW + timedelta(hours=1))
    assert later.fired == []
