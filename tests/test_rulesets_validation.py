"""Bad ruleset documents: every error names its place by path and, for files, by line."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from decisions.core.errors import ValidationError
from rulesets.document import parse_text, read_file
from rulesets.validate import validate

ROOT = Path(__file__).resolve().parent.parent
GOOD_RULE = """\
  - name: ok
    when: {field: state.cart_value, op: gt, value: 100}
    then: [{discount: {percent: 10}}]
"""


def errors_of(text: str) -> list[tuple[int | None, str, str]]:
    data, lines = parse_text(textwrap.dedent(text), "test.yaml")
    with pytest.raises(ValidationError) as caught:
        validate(data, lines)
    return [(d.line, d.field, d.message) for d in caught.value.details]


def one_rule(when: str, then: str = "[{discount: {percent: 10}}]", extra: str = "") -> str:
    """A document whose only rule starts on line 3; ``when`` is on line 4, ``then`` on 5."""
    return f"name: t\nrules:\n  - name: r\n    when: {when}\n    then: {then}\n{extra}"


CASES = [
    pytest.param(one_rule("{field: state.cart_value, op: gt, value: abc}"),
                 [(4, "rules[0].when.value", 'expected a number, got "abc"')], id="type-mismatch"),
    pytest.param(one_rule("{all: [{field: event.type, op: eq, value: add_to_cart}, "
                          "{field: state.cart_value, op: gte, value: '200'}]}"),
                 [(4, "rules[0].when.all[1].value", 'expected a number, got "200"')],
                 id="nested-type-mismatch"),
    pytest.param(one_rule("{field: state.cart_vale, op: gt, value: 1}"),
                 [(4, "rules[0].when.field",
                   'unknown state feature "state.cart_vale" (did you mean state.cart_value?)')],
                 id="unknown-state-feature"),
    pytest.param(one_rule("{field: weather.temp, op: gt, value: 1}"),
                 [(4, "rules[0].when.field", 'unknown field "weather.temp"')],
                 id="unknown-field"),
    pytest.param(one_rule("{field: state.cart_value, op: $gt, value: 1}"),
                 [(4, "rules[0].when.op", 'unknown operator "$gt" (expected one of eq, ne, gt, '
                   "gte, lt, lte, between, within, in, not_in, contains, prefix, exists)")],
                 id="unknown-operator"),
    pytest.param(one_rule("{field: state.cart_value, op: prefix, value: '1'}"),
                 [(4, "rules[0].when.op", '"prefix" does not apply to state.cart_value (number)')],
                 id="operator-wrong-type"),
    # (a rule's conditions left empty, {} or {all: []}, mean "always": #23)
    pytest.param(one_rule("{not: {}}"),
                 [(4, "rules[0].when.not",
                   "empty condition: give all, any, not, or field/op/value")],
                 id="empty-condition"),
    pytest.param(one_rule("{any: []}"),
                 [(4, "rules[0].when.any", "empty condition group: add at least one condition")],
                 id="empty-all"),
    pytest.param(one_rule("{all: [{any: []}, {not: {}}]}"),
                 [(4, "rules[0].when.all[0].any",
                   "empty condition group: add at least one condition"),
                  (4, "rules[0].when.all[1].not",
                   "empty condition: give all, any, not, or field/op/value")],
                 id="empty-nested"),
    pytest.param(one_rule("{all: [{field: state.cart_value, op: gt, value: 100}, "
                          "{field: state.cart_value, op: lt, value: 50}]}"),
                 [(4, "rules[0].when",
                   "contradictory conditions on state.cart_value: they can never all hold")],
                 id="contradiction-range"),
    pytest.param(one_rule("{all: [{field: event.type, op: eq, value: purchase}, "
                          "{field: event.type, op: eq, value: search}]}"),
                 [(4, "rules[0].when",
                   "contradictory conditions on event.type: they can never all hold")],
                 id="contradiction-equals"),
    pytest.param(one_rule("{all: [{field: state.since_purchase, op: within, value: 60}, "
                          "{field: state.since_purchase, op: gt, value: 120}]}"),
                 [(4, "rules[0].when",
                   "contradictory conditions on state.since_purchase: they can never all hold")],
                 id="contradiction-within"),
    pytest.param(one_rule("{field: state.cart_value, op: between, value: [50, 10]}"),
                 [(4, "rules[0].when.value", "low 50 is above high 10")], id="between-reversed"),
    pytest.param(one_rule("{field: state.cart_value, op: between, value: 10}"),
                 [(4, "rules[0].when.value", "expected [low, high] numbers, got 10")],
                 id="between-scalar"),
    pytest.param(one_rule("{field: customer.tier, op: in, value: []}"),
                 [(4, "rules[0].when.value", "expected a non-empty list, got []")],
                 id="in-empty"),
    pytest.param(one_rule("{field: customer.tier, op: in, value: [gold, 3]}"),
                 [(4, "rules[0].when.value[1]", "expected a string, got 3")], id="in-item-type"),
    pytest.param(one_rule("{field: score.churn_risk, op: exists, value: true}"),
                 [(4, "rules[0].when.value", '"exists" takes no value')], id="exists-value"),
    pytest.param(one_rule("{field: state.cart_value, op: gt}"),
                 [(4, "rules[0].when.value", "required")], id="missing-value"),
    pytest.param(one_rule("{field: event.type, op: eq, value: checkout}"),
                 [(4, "rules[0].when.value", 'unknown event type "checkout"')],
                 id="unknown-event-type"),
    pytest.param(one_rule("{field: user.segments, op: contains, value: [vip]}"),
                 [(4, "rules[0].when.value", "expected a string or number, got ['vip']")],
                 id="contains-list"),
    pytest.param(one_rule("{all: [{field: state.cart_value, op: gt, value: 1, unit: usd}]}"),
                 [(4, "rules[0].when.all[0].unit",
                   "unknown field (expected field, op, value; or all/any/not)")],
                 id="unknown-condition-key"),
    pytest.param(one_rule("{all: [], any: []}"),
                 [(4, "rules[0].when", "a group holds exactly one of all, any, not")],
                 id="two-groups"),
    pytest.param(one_rule("[a, b]"),
                 [(4, "rules[0].when",
                   "expected a condition object (all, any, not, or field/op/value)")],
                 id="when-not-object"),
    pytest.param(one_rule("{field: state.cart_value, op: gt, value: 1}", "[{email: {to: me}}]"),
                 [(5, "rules[0].then[0]",
                   'unknown action "email" (expected one of discount, recommend, add_segment, '
                   'free_shipping)')],
                 id="unknown-action"),
    pytest.param(one_rule("{field: state.cart_value, op: gt, value: 1}", "[]"),
                 [(5, "rules[0].then", "required: a non-empty list of actions")], id="no-actions"),
    pytest.param(one_rule("{field: state.cart_value, op: gt, value: 1}",
                          "[{discount: {percent: 10, amount: 5}}]"),
                 [(5, "rules[0].then[0].discount", "give exactly one of percent or amount")],
                 id="percent-and-amount"),
    pytest.param(one_rule("{field: state.cart_value, op: gt, value: 1}",
                          "[{discount: {percent: 150}}]"),
                 [(5, "rules[0].then[0].discount.percent", "must be above 0 and at most 100")],
                 id="percent-range"),
    pytest.param(one_rule("{field: state.cart_value, op: gt, value: 1}",
                          "[{discount: {percent: 10, per_user_cap: 0, min_basket: cheap}}]"),
                 [(5, "rules[0].then[0].discount.min_basket", 'expected a number, got "cheap"'),
                  (5, "rules[0].then[0].discount.per_user_cap", "must be above 0")],
                 id="discount-params"),
    pytest.param(one_rule("{field: state.cart_value, op: gt, value: 1}",
                          "[{recommend: {strategy: magic, count: 3}}]"),
                 [(5, "rules[0].then[0].recommend.strategy", 'unknown strategy "magic" (expected '
                   "one of next_click, covisit, category_top, top_sellers, top_viewed, "
                   "recently_viewed, product_list, similar)"),
                  (5, "rules[0].then[0].recommend.slot", "required")],
                 id="recommend-params"),
    pytest.param(one_rule("{field: state.cart_value, op: gt, value: 1}",
                          "[{discount: {percent: 5}, add_segment: {segment: x}}]"),
                 [(5, "rules[0].then[0]", "expected one action such as {discount: {percent: 10}} "
                   "(one of discount, recommend, add_segment, free_shipping)")],
                 id="two-actions-in-one"),
    pytest.param(one_rule("{field: state.cart_value, op: gt, value: 1}",
                          extra="    priority: high\n    enabled: 'yes'\n"),
                 [(6, "rules[0].priority", 'expected a whole number, got "high"'),
                  (7, "rules[0].enabled", "expected true or false")], id="priority-enabled"),
    pytest.param(one_rule("{field: state.cart_value, op: gt, value: 1}",
                          extra="    active: {from: tomorrow, until: 2026-01-01T00:00:00Z}\n"),
                 [(6, "rules[0].active.from", 'expected an ISO 8601 date-time, got "tomorrow"')],
                 id="active-bad-date"),
    pytest.param(one_rule("{field: state.cart_value, op: gt, value: 1}",
                          extra="    active: {from: '2026-02-01T00:00:00Z', "
                                "until: '2026-01-01T00:00:00Z'}\n"),
                 [(6, "rules[0].active", "from must be before until")], id="active-reversed"),
    pytest.param(one_rule("{field: state.cart_value, op: gt, value: 1}",
                          extra="    starts: 2026-01-01\n"),
                 [(6, "rules[0].starts", "unknown field (expected one of active, budget, "
                   "description, enabled, holdout, name, priority, then, when)")],
                 id="unknown-rule-key"),
    pytest.param("name: t\nrules:\n" + GOOD_RULE + GOOD_RULE,
                 [(6, "rules[1].name", 'duplicate rule name "ok" (also rules[0])')],
                 id="duplicate-names"),
    pytest.param("name: Big Sale\nstacking: sometimes\nowner: me\nrules: []\n",
                 [(3, "owner", "unknown field (expected one of budget, caps, description, "
                   "four_eyes, holdout, name, rules, stacking)"),
                  (1, "name", "required: lowercase letters, digits, - and _ (up to 100)"),
                  (2, "stacking", "expected true or false"),
                  (4, "rules", "required: a non-empty list of rules")], id="ruleset-level"),
    pytest.param("name: t\nrules:\n  - just a string\n",
                 [(3, "rules[0]", "expected an object")], id="rule-not-object"),
    pytest.param("- a\n- b\n", [(1, "", "a ruleset must be an object with name and rules")],
                 id="not-an-object"),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_bad_document_names_each_error_by_path_and_line(
    text: str, expected: list[tuple[int, str, str]]
) -> None:
    assert errors_of(text) == expected


def test_error_in_a_deep_json_document_has_path_and_line() -> None:
    text = (
        '{\n  "name": "t",\n  "rules": [\n'
        '    {"name": "a", "when": {"field": "state.cart_value", "op": "gt", "value": 1},\n'
        '     "then": [{"discount": {"percent": 5}}]},\n'
        '    {"name": "b",\n'
        '     "when": {"all": [\n'
        '        {"field": "event.type", "op": "eq", "value": "add_to_cart"},\n'
        '        {"field": "state.cart_value", "op": "gt", "value": "abc"}]},\n'
        '     "then": [{"discount": {"percent": 5}}]},\n'
        '    {"name": "c", "when": {"field": "state.cart_value", "op": "gt", "value": 1},\n'
        '     "then": [{"discount": {"percent": 5}}]}\n'
        "  ]\n}\n"
    )
    assert errors_of(text) == [(9, "rules[1].when.all[1].value", 'expected a number, got "abc"')]


@pytest.mark.parametrize(("text", "line", "message"), [
    ('{"name": "t",\n "rules": [}\n', 2, "Expecting value"),
    ("name: t\nrules:\n  - name: a\n     when: x\n", 4, "mapping values are not allowed here"),
])
def test_syntax_errors_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_text(text, "bad.yaml")
    assert caught.value.message.startswith("bad.yaml: not valid")
    assert [(d.line, d.message) for d in caught.value.details] == [(line, message)]


def test_every_error_of_a_document_is_reported_at_once() -> None:
    text = one_rule("{all: [{field: state.cart_vale, op: gt, value: 1}, "
                    "{field: score.purchase_intent, op: between, value: [0.9, 0.1]}]}",
                    "[{discount: {amount: -5}}, {recommend: {slot: cart}}]")
    assert [path for _, path, _ in errors_of(text)] == [
        "rules[0].when.all[0].field", "rules[0].when.all[1].value",
        "rules[0].then[0].discount.amount", "rules[0].then[1].recommend.strategy",
    ]


def test_valid_document_is_normalised_with_defaults() -> None:
    data, lines = parse_text("name: t\nrules:\n" + GOOD_RULE)
    doc = validate(data, lines)
    assert doc == {
        "name": "t", "description": "", "stacking": False, "four_eyes": False,
        "rules": [{"name": "ok", "description": "", "priority": 0, "enabled": True,
                   "active": {}, "when": {"field": "state.cart_value", "op": "gt", "value": 100},
                   "then": [{"discount": {"percent": 10}}]}],
    }


def test_model_scores_of_any_name_are_accepted() -> None:
    data, _ = parse_text(one_rule("{field: score.next_week_spend, op: gt, value: 100}"))
    assert validate(data)["rules"][0]["when"]["field"] == "score.next_week_spend"


@pytest.mark.parametrize("path", sorted((ROOT / "rulesets" / "starter").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_starter_rulesets_are_valid(path: Path) -> None:
    data, lines = read_file(path)
    assert validate(data, lines)["rules"]


def test_a_rule_without_conditions_is_valid_and_always_matches() -> None:
    from decisions.simulate.dryrun import dry_run

    for when in (None, {}, {"all": []}):
        rule: dict[str, Any] = {"name": "always", "then": [{"discount": {"percent": 20}}]}
        if when is not None:
            rule["when"] = when
        doc = validate({"name": "storewide", "rules": [rule]})
        assert doc["rules"][0]["when"] == {"all": []}
        for etype, props in (("page_view", {"page": "home"}), ("search", {"query": "x"})):
            result = dry_run(doc, {"type": etype, "properties": props})
            assert result.fired == ["always"]
    # an empty group inside conditions is still a mistake
    with pytest.raises(ValidationError):
        validate({"name": "x", "rules": [{"name": "r", "when": {"all": [{"any": []}]},
                                          "then": [{"discount": {"percent": 5}}]}]})


def test_recommend_aims_are_checked() -> None:
    def errors(params: str) -> list[tuple[str, str]]:
        with pytest.raises(ValidationError) as caught:
            validate(parse_text(one_rule("{field: event.type, op: eq, value: search}",
                                         f"[{{recommend: {params}}}]"))[0])
        return [(e.field, e.message) for e in caught.value.details]

    assert errors("{strategy: product_list, slot: s}") == [
        ("rules[0].then[0].recommend.products", "required by the product_list strategy")]
    assert errors("{strategy: similar, slot: s, price: lower}") == [
        ("rules[0].then[0].recommend.price",
         'unknown value "lower" (expected one of cheaper, similar)')]
    assert validate(parse_text(one_rule(
        "{field: event.type, op: eq, value: search}",
        "[{recommend: {strategy: category_top, slot: s, category: this_category}}]"))[0])
