"""Compilation into durable_rules and the engine: limits of durable_rules we work around."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from decisions.engine import RuleEngine, build_fact
from decisions.events import Event
from rulesets.compile import CHUNK_PATHS, compile_ruleset
from rulesets.validate import validate

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
SEGMENT = [{"add_segment": {"segment": "s"}}]


def view(at: datetime = NOW) -> Event:
    return Event("e-1", "page_view", "u-1", at, {"page": "home"})


def fired(doc: dict[str, Any], event: Event | None = None, **state: Any) -> list[str]:
    event = event or view()
    compiled = compile_ruleset(validate(doc), 1)
    matches = RuleEngine().evaluate(compiled, event, build_fact(event, state))
    return [m.rule for m in matches]


def test_hundreds_of_rules_matching_one_event_all_fire() -> None:
    """durable_rules fails an assert (error 303) with ~64 alternatives pending at once."""
    rules = [{"name": f"r{i:03}", "priority": i,
              "when": {"all": [{"field": "event.type", "op": "eq", "value": "page_view"},
                               {"field": "state.cart_value", "op": "gt", "value": i}]},
              "then": SEGMENT} for i in range(300)]
    doc = {"name": "many", "rules": rules}
    compiled = compile_ruleset(validate(doc), 1)
    assert len(compiled.by_type["page_view"]) == 300 // CHUNK_PATHS + 1
    assert fired(doc, cart_value=1000) == [f"r{i:03}" for i in reversed(range(300))]
    assert fired(doc, cart_value=10) == [f"r{i:03}" for i in reversed(range(10))]


def test_not_exists_fires_without_hanging() -> None:
    """durable_rules' $nex loops forever when it matches: it is never emitted."""
    doc = {"name": "t", "rules": [
        {"name": "no-model", "when": {"not": {"field": "score.churn_risk", "op": "exists"}},
         "then": SEGMENT}]}
    assert fired(doc) == ["no-model"]
    compiled = compile_ruleset(validate(doc), 1)
    assert "$nex" not in str(compiled.by_type)


def test_a_rule_with_many_alternatives_is_checked_in_python() -> None:
    tiers = [f"t{i}" for i in range(6)]
    when = {"all": [{"any": [{"field": "customer.tier", "op": "in", "value": tiers},
                             {"field": "customer.country", "op": "in", "value": tiers}]},
                    {"field": "customer.consent", "op": "eq", "value": True}]}
    doc = {"name": "t", "rules": [{"name": "wide", "when": when, "then": SEGMENT}]}
    compiled = compile_ruleset(validate(doc), 1)
    assert list(compiled.by_type["page_view"][0]["r_wide"]["all"][0]["m"]) == [
        next(iter(compiled.derived))]
    event = view()
    for customer, expected in (({"tier": "t3", "consent": True}, ["wide"]),
                               ({"country": "t5", "consent": True}, ["wide"]),
                               ({"tier": "t3", "consent": False}, []),
                               ({"tier": "gold", "consent": True}, [])):
        matches = RuleEngine().evaluate(compiled, event, build_fact(event, {}, customer))
        assert [m.rule for m in matches] == expected


def test_rules_out_of_their_window_are_not_evaluated() -> None:
    rules = []
    for day in range(5):
        start = NOW + timedelta(days=day - 1)
        rules += [{"name": f"d{day}-r{i}", "active": {"from": start.isoformat(),
                                                      "until": (start + timedelta(days=1))
                                                      .isoformat()},
                   "when": {"field": "state.cart_value", "op": "gte", "value": 0},
                   "then": SEGMENT} for i in range(20)]
    doc = {"name": "seasons", "rules": rules}
    compiled = compile_ruleset(validate(doc), 1)
    spans = compiled.spans_by_type["page_view"]
    assert sum(1 for lo, hi in spans if lo <= view().ts_ms < hi) < len(spans)
    assert sorted(fired(doc, cart_value=1)) == sorted(f"d1-r{i}" for i in range(20))
    later = view(NOW + timedelta(days=2, hours=1))
    assert sorted(fired(doc, later, cart_value=1)) == sorted(f"d3-r{i}" for i in range(20))


def test_only_the_keys_rules_read_are_posted_and_reasons_name_them() -> None:
    doc = {"name": "t", "rules": [{
        "name": "big", "when": {"all": [
            {"field": "event.type", "op": "eq", "value": "page_view"},
            {"field": "state.cart_value", "op": "gt", "value": 100},
            {"field": "user.segments", "op": "contains", "value": "vip"}]},
        "then": SEGMENT}]}
    compiled = compile_ruleset(validate(doc), 4)
    assert compiled.chunk_reads["page_view"] == [("s_cart_value",)]
    event = view()
    [match] = RuleEngine().evaluate(compiled, event, build_fact(
        event, {"cart_value": 150, "segments": ["vip"], "order_count": 3}))
    assert (match.rule, match.version) == ("big", 4)
    assert match.reason == {"event.type": "page_view", "state.cart_value": 150,
                            "user.segments": ["vip"]}


def test_unloaded_versions_are_loaded_again_on_demand() -> None:
    doc = {"name": "t", "rules": [{"name": "any-view", "when": {
        "field": "event.type", "op": "eq", "value": "page_view"}, "then": SEGMENT}]}
    compiled = compile_ruleset(validate(doc), 1)
    engine = RuleEngine()
    event = view()
    assert [m.rule for m in engine.evaluate(compiled, event, build_fact(event, {}))] == [
        "any-view"]
    engine.unload(compiled)
    assert [m.rule for m in engine.evaluate(compiled, event, build_fact(event, {}))] == [
        "any-view"]
