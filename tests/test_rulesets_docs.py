"""docs/rules.md lists every field, operator, action and CLI action the code knows."""

from __future__ import annotations

import re

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
