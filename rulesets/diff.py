"""A structured diff between two ruleset documents (versions, or a version and a draft).

Rules are matched by name (their order carries no meaning: priority does). The result::

    {"settings": {"stacking": {"before": false, "after": true}},
     "added": ["new-rule"], "removed": ["old-rule"],
     "changed": [{"rule": "high-value-cart",
                  "fields": {"when": {"before": {...}, "after": {...}}},
                  "changes": [{"path": "when.all[1].value", "before": 200, "after": 250}]}]}

``fields`` holds each changed top-level field of the rule whole; ``changes`` pinpoints
every changed leaf by path, the way validation errors name places.
"""

from __future__ import annotations

from typing import Any

from rulesets.validate import normalise

SETTINGS = ("name", "description", "stacking", "four_eyes")
RULE_FIELDS = ("description", "priority", "enabled", "active", "when", "then")
# offer economics (#19): present only where set (absent reads as None, "not set")
ECONOMICS = ("holdout", "caps", "budget")
RULE_ECONOMICS = ("holdout", "budget")


def diff_documents(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    a, b = normalise(before), normalise(after)
    settings = {k: {"before": a[k], "after": b[k]} for k in SETTINGS if a[k] != b[k]}
    settings |= {k: {"before": a.get(k), "after": b.get(k)} for k in ECONOMICS
                 if a.get(k) != b.get(k)}
    rules_a = {r["name"]: r for r in a["rules"]}
    rules_b = {r["name"]: r for r in b["rules"]}
    changed = []
    for name, rule in rules_b.items():
        old = rules_a.get(name)
        if old is None or old == rule:
            continue
        fields = {f: {"before": old.get(f), "after": rule.get(f)}
                  for f in (*RULE_FIELDS, *RULE_ECONOMICS) if old.get(f) != rule.get(f)}
        changes: list[dict[str, Any]] = []
        for f in fields:
            _leaves(old.get(f), rule.get(f), f, changes)
        changed.append({"rule": name, "fields": fields, "changes": changes})
    return {
        "settings": settings,
        "added": [n for n in rules_b if n not in rules_a],
        "removed": [n for n in rules_a if n not in rules_b],
        "changed": changed,
    }


def summary(before: dict[str, Any] | None, after: dict[str, Any]) -> str:
    """One line naming what changed, for the audit log: "changed rule high-value-cart"."""
    if before is None:
        return "new ruleset: rules " + ", ".join(r["name"] for r in normalise(after)["rules"])
    d = diff_documents(before, after)
    parts = [f"{verb} rule{'s' if len(names) > 1 else ''} {', '.join(names)}"
             for verb, names in (("added", d["added"]), ("removed", d["removed"]),
                                 ("changed", [c["rule"] for c in d["changed"]])) if names]
    if d["settings"]:
        parts.append("changed " + ", ".join(d["settings"]))
    return "; ".join(parts) or "no change"


def is_empty(diff: dict[str, Any]) -> bool:
    return not (diff["settings"] or diff["added"] or diff["removed"] or diff["changed"])


def _leaves(a: Any, b: Any, path: str, out: list[dict[str, Any]]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            if key not in b:
                out.append({"path": f"{path}.{key}", "before": a[key], "after": None})
            elif key not in a:
                out.append({"path": f"{path}.{key}", "before": None, "after": b[key]})
            elif a[key] != b[key]:
                _leaves(a[key], b[key], f"{path}.{key}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                _leaves(x, y, f"{path}[{i}]", out)
    elif a != b:
        out.append({"path": path, "before": a, "after": b})


def render(diff: dict[str, Any]) -> str:
    """The diff as text, for the CLI."""
    if is_empty(diff):
        return "no differences"
    lines = []
    for key, change in diff["settings"].items():
        lines.append(f"~ {key}: {change['before']!r} -> {change['after']!r}")
    lines += [f"+ rule {name}" for name in diff["added"]]
    lines += [f"- rule {name}" for name in diff["removed"]]
    for rule in diff["changed"]:
        lines.append(f"~ rule {rule['rule']}")
        for change in rule["changes"]:
            lines.append(f"    {change['path']}: {change['before']!r} -> {change['after']!r}")
    return "\n".join(lines)
