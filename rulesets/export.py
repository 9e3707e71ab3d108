"""The file form of a stored ruleset: what ``decisions rulesets export`` prints.

A stored document is the validated one: every default filled in (``enabled: true``,
``active: {}``, ``four_eyes: false``, empty descriptions) and its keys in PostgreSQL's
JSONB order. Exported as it is, it diffs against the file it came from as noise. The file
form puts keys in reading order (name, description, priority, when, then; field, op,
value), leaves out what only repeats a default, and lays the YAML out as the starter
files are written: conditions and action parameters on one line each, long descriptions
folded at 88 columns, a blank line between rules. Importing the export gives the same
stored document (checked on every export, with a plain dump as the fallback).
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

import yaml

from rulesets.validate import validate

RULESET_ORDER = ("name", "description", "stacking", "four_eyes", "rules")
RULE_ORDER = ("name", "description", "priority", "enabled", "active", "when", "then")
LEAF_ORDER = ("field", "op", "value")
ACTION_ORDER = {
    "discount": ("percent", "amount", "code", "min_basket", "expires_minutes", "per_user_cap",
                 "products"),
    "recommend": ("strategy", "slot", "count"),
    "add_segment": ("segment",),
}
WIDTH = 88  # folded descriptions wrap here
LONGEST = 100  # a longer "description: ..." line is folded


def _ordered(d: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    head = {k: d[k] for k in order if k in d}
    return head | {k: v for k, v in sorted(d.items()) if k not in head}


def _condition(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if "field" in node or "op" in node:
        return _ordered(node, LEAF_ORDER)
    return {k: [_condition(c) for c in v] if isinstance(v, list) else _condition(v)
            for k, v in node.items()}


def file_form(document: dict[str, Any]) -> dict[str, Any]:
    """The document in reading order with the defaults it would get anyway left out."""
    out = _ordered(document, RULESET_ORDER)
    if not out.get("description"):
        out.pop("description", None)
    if not out.get("four_eyes"):
        out.pop("four_eyes", None)
    out["stacking"] = bool(out.get("stacking", False))  # always shown: it decides a lot
    out = _ordered(out, RULESET_ORDER)
    rules = []
    for rule in out.get("rules") or []:
        r = _ordered(rule, RULE_ORDER)
        if not r.get("description"):
            r.pop("description", None)
        if r.get("enabled", True) is True:
            r.pop("enabled", None)
        if not r.get("active"):
            r.pop("active", None)
        if "when" in r:
            r["when"] = _condition(r["when"])
        if isinstance(r.get("then"), list):
            r["then"] = [{k: _ordered(v, ACTION_ORDER.get(k, ())) if isinstance(v, dict) else v
                          for k, v in action.items()} if isinstance(action, dict) else action
                         for action in r["then"]]
        rules.append(r)
    out["rules"] = rules
    return out


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6,
                          allow_unicode=True).strip().removesuffix("\n...").strip()


def _scalar_line(key: str, value: Any, indent: int) -> list[str]:
    pad = " " * indent
    text = _flow(value)
    line = f"{pad}{key}: {text}"
    if (isinstance(value, str) and len(line) > LONGEST and value == " ".join(value.split())
            and not value.startswith(("'", '"'))):
        body = textwrap.wrap(value, WIDTH - indent - 2, break_long_words=False,
                             break_on_hyphens=False)
        return [f"{pad}{key}: >-"] + [f"{pad}  {part}" for part in body]
    return [line]


def _condition_lines(node: Any, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(node, dict) and ("field" in node or "op" in node):
        return [f"{pad}{_flow(node)}"]
    lines: list[str] = []
    for key, value in node.items():
        if isinstance(value, list):
            lines.append(f"{pad}{key}:")
            for child in value:
                sub = _condition_lines(child, indent + 4)
                lines.append(f"{pad}  - {sub[0].lstrip()}")
                lines.extend(sub[1:])
        elif isinstance(value, dict):
            lines.append(f"{pad}{key}:")
            lines.extend(_condition_lines(value, indent + 2))
        else:
            lines.append(f"{pad}{key}: {_flow(value)}")
    return lines


def _layout(form: dict[str, Any]) -> str:
    lines: list[str] = []
    for key, value in form.items():
        if key != "rules":
            lines += _scalar_line(key, value, 0)
    lines.append("rules:")
    for i, rule in enumerate(form["rules"]):
        if i:
            lines.append("")
        first = True
        for key, value in rule.items():
            if key == "when" and isinstance(value, dict) and ("field" in value or "op" in value):
                lines.append(f"    when: {_flow(value)}")
            elif key == "when":
                lines.append("    when:")
                lines += _condition_lines(value, 6)
            elif key == "then":
                lines.append("    then:")
                lines += [f"      - {_flow(action)[1:-1]}" if isinstance(action, dict)
                          and len(action) == 1 else f"      - {_flow(action)}"
                          for action in value]
            else:
                got = _scalar_line(key, value, 4)
                if first:
                    got[0] = "  - " + got[0][4:]
                lines += got
            first = False
    return "\n".join(lines) + "\n"


def to_yaml(document: dict[str, Any]) -> str:
    form = file_form(document)
    text = _layout(form)
    try:
        same = validate(yaml.safe_load(text)) == validate(document)
    except Exception:  # noqa: BLE001  (any surprise: fall back to the plain dump)
        same = False
    if not same:
        text = yaml.safe_dump(form, sort_keys=False, allow_unicode=True)
    return text


def to_json(document: dict[str, Any]) -> str:
    return json.dumps(file_form(document), indent=2, ensure_ascii=False) + "\n"
