"""docs/rules.md lists every field, operator, action and CLI action the code knows."""

from __future__ import annotations

import re
from typing import Any

from rulesets.language import ACTIONS, FIELDS, OPERATORS, STATE_TYPES, WINDOWS
from tests.helpers import ROOT

DOC = (ROOT / "docs" / "rules.md").read_text()


def test_every_field_is_documented() -> None:
    families = ("state.count_", "state.since_")
    missing = [path for path in FIELDS
               if f"`{path}`" not in DOC and not path.startswith(families)]
    missing += [path for path in FIELDS if path.startswith(families)
                and path != "state.since_same_product_view"
                and not any(f"`{pattern}`" in DOC for pattern in (
                    "state.count_<type>_<window>", "state.since_<type>",
                    "state.since_page_<page>"))]
    assert missing == []
    assert all(t in DOC for t in STATE_TYPES) and all(w in DOC for w in WINDOWS)


def test_every_operator_and_action_is_documented() -> None:
    rows = set(re.findall(r"^\| `([a-z_]+)` \|", DOC, re.MULTILINE))
    assert set(OPERATORS) <= rows
    assert set(ACTIONS) <= rows


def test_every_cli_action_is_documented() -> None:
    for action in ("validate", "import", "export", "publish", "rollback", "diff", "list",
                   "history"):
        assert f"decisions rulesets {action}" in DOC


# each worked example: an event and the state it fires on, and one it does not fire on
EXAMPLES = {
    "product-interest": (
        {"type": "product_view", "properties": {"product_id": "p-1"}},
        {"count_product_view_24h_this_product": 3}, {"count_product_view_24h_this_product": 2}),
    "seen-again": (
        {"type": "product_view", "properties": {"product_id": "p-1"}},
        {"since_same_product_view": 3600}, {}),
    "running-shoes": (
        {"type": "product_view", "properties": {"product_id": "p-1"}},
        {"count_product_view_10m_category_running-shoes": 3},
        {"count_product_view_10m_category_running-shoes": 3, "count_add_to_cart_10m": 1}),
    "gifts": ({"type": "search", "properties": {"query": "gift for dad"}}, {}, None),
    "save-the-sale": (
        {"type": "remove_from_cart",
         "properties": {"product_id": "j-1", "price": 299.0, "quantity": 1}}, {}, None),
    "category-page": ({"type": "product_view", "properties": {"product_id": "p-1"}}, {}, None),
    "shipping": (
        {"type": "add_to_cart", "properties": {"product_id": "p-1", "price": 60.0,
                                               "quantity": 1}},
        {"cart_value": 60.0}, {"cart_value": 20.0}),
    "holiday": ({"type": "page_view", "properties": {"page": "home"},
                 "ts": "2026-12-24T10:00:00Z"}, {}, None),
    "welcome-back": (
        {"type": "add_to_cart", "properties": {"product_id": "p-1", "price": 5.0,
                                               "quantity": 1}},
        {"order_count": 0}, {"order_count": 2}),
    "first-visit": ({"type": "page_view", "properties": {"page": "home"}}, {},
                    {"first_visit_ever": False, "visit_count": 3}),
    # a profile with "customer": the customer record (custom attributes)
    "pro-teams": ({"type": "product_view", "properties": {"product_id": "p-1"}},
                  {"customer": {"plan": "pro", "seats": 12}},
                  {"customer": {"plan": "pro", "seats": "12"}}),  # text is not a number
}


def _profile(given: dict[str, Any]) -> dict[str, Any]:
    return {"customer": given["customer"]} if "customer" in given else {"state": given}


def test_every_worked_example_is_valid_and_fires() -> None:
    from decisions.simulate.dryrun import dry_run
    from rulesets.document import parse_text
    from rulesets.validate import validate

    section = DOC.split("## Worked examples", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    documents = [validate(parse_text(block)[0]) for block in blocks]
    assert sorted(d["name"] for d in documents) == sorted(EXAMPLES)
    for document in documents:
        event, fires, quiet = EXAMPLES[document["name"]]
        assert dry_run(document, event, **_profile(fires)).fired, document["name"]
        if quiet is not None:
            assert not dry_run(document, event, **_profile(quiet)).fired, document["name"]
    holiday = next(d for d in documents if d["name"] == "holiday")
    assert not dry_run(holiday, {**EXAMPLES["holiday"][0], "ts": "2026-12-28T10:00:00Z"}).fired
