"""A readable side-by-side diff of two ruleset documents (their YAML, line by line)."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

from admin.forms import canonical
from rulesets.diff import diff_documents
from rulesets.document import dump_yaml


@dataclass(frozen=True)
class Row:
    kind: str  # same | changed | added | removed | gap
    left_no: int | None
    left: str
    right_no: int | None
    right: str


def side_by_side(before: dict[str, Any] | None, after: dict[str, Any] | None,
                 context: int = 3) -> list[Row]:
    a = dump_yaml(canonical(before)).splitlines() if before else []
    b = dump_yaml(canonical(after)).splitlines() if after else []
    rows: list[Row] = []
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for group in matcher.get_grouped_opcodes(context):
        if rows:
            rows.append(Row("gap", None, "", None, ""))
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                rows += [Row("same", i + 1, a[i], j + 1, b[j])
                         for i, j in zip(range(i1, i2), range(j1, j2), strict=True)]
                continue
            left, right = a[i1:i2], b[j1:j2]
            for k in range(max(len(left), len(right))):
                lt = left[k] if k < len(left) else None
                rt = right[k] if k < len(right) else None
                kind = "changed" if lt is not None and rt is not None else \
                    ("removed" if rt is None else "added")
                rows.append(Row(kind, i1 + k + 1 if lt is not None else None, lt or "",
                                j1 + k + 1 if rt is not None else None, rt or ""))
    return rows


def _show(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return "(none)" if value is None else str(value)


def rule_changes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str]:
    """What changed, one line each, in words (from ``rulesets.diff``)."""
    if before is None or after is None:
        return []
    diff = diff_documents(before, after)
    lines = [f"{key}: {_show(c['before'])} → {_show(c['after'])}"
             for key, c in diff["settings"].items()]
    lines += [f"rule {name} added" for name in diff["added"]]
    lines += [f"rule {name} removed" for name in diff["removed"]]
    for rule in diff["changed"]:
        for c in rule["changes"]:
            lines.append(f"rule {rule['rule']}: {c['path']} {_show(c['before'])} → "
                         f"{_show(c['after'])}")
    return lines
