"""A readable side-by-side diff of two ruleset documents (their YAML, line by line)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from admin.forms import canonical
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


def rule_changes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str]:
    """A one-line summary per rule added, removed or changed, and per setting changed."""
    old = {r["name"]: r for r in (before or {}).get("rules", [])}
    new = {r["name"]: r for r in (after or {}).get("rules", [])}
    lines = [f"rule {n} added" for n in new if n not in old]
    lines += [f"rule {n} removed" for n in old if n not in new]
    lines += [f"rule {n} changed" for n in new if n in old and new[n] != old[n]]
    for key in ("description", "stacking", "four_eyes"):
        if before and after and before.get(key) != after.get(key):
            lines.append(f"{key}: {before.get(key)!r} → {after.get(key)!r}")
    return lines
