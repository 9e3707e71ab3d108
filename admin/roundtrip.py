"""What a trip through the rule editor's form keeps of a rule (#23).

``form_values`` writes a rule as the rendered form submits it (the template's input names
and values, once more in Python: a test holds the two together); ``unshown`` takes a rule
parsed from the source through it and back (``admin.forms.parse_rule``) and names the
paths that would be dropped or changed, ``why_unshown`` says why in words. "Apply source
to form" refuses a source with any, and Save refuses unapplied source edits
(``differences``).

What a browser submits is not always what the page holds: a text input drops line breaks,
a number input drops a value that is not a number, a select without a selected option
sends its first one. ``form_values`` does the same, so those losses are seen.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from admin.forms import (
    ACTION_PARAMS,
    SCOPE_CHOICES,
    family_of,
    field_spec,
    parse_rule,
    range_text,
    renderable,
    value_kind,
    value_text,
)
from admin.wording import datetime_local
from rulesets.language import ACTIONS, BOOL, NUMBER, RULE_PARAM_GROUPS, STATE_TYPES, STRING

_HTML_NUMBER = re.compile(r"-?(\d+(\.\d+)?|\.\d+)([eE][+-]?\d+)?")
_LOCAL_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")


def _line(text: str) -> str:
    return text.replace("\r", "").replace("\n", "")


def _number_input(text: str) -> str:
    text = _line(text)
    return text if _HTML_NUMBER.fullmatch(text) else ""


def _select(text: str, options: Any) -> str:
    options = list(options)
    return text if text in options else (options[0] if options else "")


def _leaf_values(node: dict[str, Any], path: str, out: dict[str, str]) -> None:
    field = str(node.get("field") or "")
    out[f"{path}.field"] = field
    # a family's field: its template in the picker, its parts in their inputs (every
    # row has them, hidden when its field is not a family's)
    found = family_of(field)
    parts = found[1] if found is not None else {}
    if found is not None:
        out[f"{path}.field"] = found[0].template
    out[f"{path}._type"] = _select(parts.get("type", ""), STATE_TYPES)
    out[f"{path}._window"] = _line(parts.get("window", ""))
    out[f"{path}._scope"] = _select(parts.get("scope", ""), (s for s, _ in SCOPE_CHOICES))
    out[f"{path}._name"] = _line(parts.get("name", ""))
    out[f"{path}.op"] = str(node.get("op") or "")
    spec = field_spec(field)
    ftype = spec.type if spec else STRING
    kind = value_kind(node)
    if kind == "range":
        out[f"{path}.value[0]"] = _number_input(range_text(node, 0))
        out[f"{path}.value[1]"] = _number_input(range_text(node, 1))
    elif kind == "same" and ftype == BOOL:
        out[f"{path}.value"] = _select(value_text(node), ("true", "false"))
    elif kind == "same" and spec is not None and spec.choices:
        out[f"{path}.value"] = _line(value_text(node))  # the current value is an option
    elif kind == "same" and ftype == NUMBER:
        out[f"{path}.value"] = _number_input(value_text(node))
    elif kind != "none":
        out[f"{path}.value"] = _line(value_text(node))


def _node_values(node: Any, path: str, out: dict[str, str]) -> None:
    if not isinstance(node, dict):
        return
    for kind in ("all", "any"):
        if kind in node:
            out[f"{path}._kind"] = kind
            for i, child in enumerate(node[kind] if isinstance(node[kind], list) else []):
                _node_values(child, f"{path}.{kind}[{i}]", out)
            return
    if "not" in node:
        _node_values(node["not"], f"{path}.not", out)
        return
    _leaf_values(node, path, out)


def _param_values(params: dict[str, Any], path: str, names: Any,
                  out: dict[str, str]) -> None:
    for param in names:
        name, ptype = (param.name, param.type) if hasattr(param, "name") else param[:2]
        text = value_text({"value": params.get(name)})
        if name == "strategy" and path.endswith(".recommend"):
            from rulesets.validate import STRATEGIES

            text = _select(text, STRATEGIES)
        elif ptype == NUMBER:
            text = _number_input(text)
        out[f"{path}.{name}"] = _line(text)


def form_values(rule: dict[str, Any], index: int) -> dict[str, str]:
    """The inputs the editor renders for ``rule`` (a ``renderable`` one), as a browser
    submits them: the template's names and values, written once more in Python so a
    source can be checked before it is shown (a test holds the two together)."""
    p = f"rules[{index}]"
    out = {f"{p}.name": _line(str(rule.get("name") or "")),
           f"{p}.priority": _number_input(value_text({"value": rule.get("priority", 0)})),
           f"{p}.description": _line(str(rule.get("description") or ""))}
    if rule.get("enabled", True):
        out[f"{p}.enabled"] = "on"
    active: dict[str, Any] = rule["active"] if isinstance(rule.get("active"), dict) else {}
    for key in ("from", "until"):
        shown = datetime_local(active.get(key, ""))
        out[f"{p}.active.{key}"] = shown if _LOCAL_TIME.fullmatch(shown) else ""
    for group, (_, group_params) in RULE_PARAM_GROUPS.items():
        spec = rule.get(group)
        _param_values(spec if isinstance(spec, dict) else {}, f"{p}.{group}", group_params,
                      out)
    _node_values(rule.get("when"), f"{p}.when", out)
    for j, action in enumerate(rule.get("then") or []):
        path = f"{p}.then[{j}]"
        kind = next(iter(action)) if isinstance(action, dict) and action else ACTIONS[0]
        given = action.get(kind) if isinstance(action, dict) else None
        params: dict[str, Any] = given if isinstance(given, dict) else {}
        if kind not in ACTIONS:  # the kind select shows its first action, empty
            kind, params = ACTIONS[0], {}
        out[f"{path}._kind"] = kind
        if kind == "discount":
            dtype = "amount" if "amount" in params else "percent"
            out[f"{path}.discount._type"] = dtype
            out[f"{path}.discount._value"] = _number_input(
                value_text({"value": params.get(dtype)}))
        _param_values(params, f"{path}.{kind}", ACTION_PARAMS.get(kind, ()), out)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def _differences(a: Any, b: Any, path: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in dict.fromkeys([*a, *b]):
            child = f"{path}.{key}" if path else str(key)
            if key not in b:
                out.append(child)
            elif key not in a:
                out.append(child)
            else:
                _differences(a[key], b[key], child, out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b) and not all(isinstance(x, dict) for x in a):
            out.append(path)
            return
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            _differences(x, y, f"{path}[{i}]", out)
        for i in range(min(len(a), len(b)), max(len(a), len(b))):
            out.append(f"{path}[{i}]")
    elif not _same(a, b):
        out.append(path)


def _meaning(rule: dict[str, Any]) -> dict[str, Any]:
    """The rule as it decides: defaults filled, a bare top-level condition as a group of
    one, an empty description or window as none (the form writes them so)."""
    out = dict(rule)
    out.setdefault("priority", 0)
    out.setdefault("enabled", True)
    if out.get("description") in ("", None):
        out.pop("description", None)
    if isinstance(out.get("active"), dict):
        active = {k: _moment(v) for k, v in out["active"].items() if v not in (None, "")}
        if active:
            out["active"] = active
        else:
            out.pop("active")
    elif out.get("active") is None:
        out.pop("active", None)
    when = out.get("when")
    if when is None or when == {}:  # no conditions: the form shows an empty "all of"
        out["when"] = {"all": []}
    elif isinstance(when, dict) and "all" not in when and "any" not in when:
        out["when"] = {"all": [when]}
    return out


def _moment(value: Any) -> Any:
    """An ``active`` time as the instant it means (``…Z``, ``+00:00`` or a YAML timestamp
    alike, to the microsecond); as written when it does not parse."""
    try:
        ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return value
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).astimezone(UTC)


def differences(rule: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """The paths where two rules mean different things (defaults, key order, a bare
    top-level condition and the form of a time aside)."""
    found: list[str] = []
    _differences(_meaning(rule), _meaning(other), "", found)
    return found


def unshown(rule: Any, index: int) -> list[str]:
    """What of ``rule`` (parsed from the source) the form cannot show: the rule's paths
    (``budget``, ``then[0].discount.budget``, ``when.all[1].value``) that a trip through
    the form would drop or change. Empty when the form shows all of it."""
    if not isinstance(rule, dict):
        return [""]
    return differences(rule, parse_rule(form_values(renderable(rule), index), index))



def why_unshown(rule: dict[str, Any], path: str) -> str:
    """In words, why the form cannot show the value at ``path`` of ``rule`` as written."""
    node: Any = rule
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            index = int(part[1:-1])
            node = node[index] if isinstance(node, list) and index < len(node) else None
        else:
            node = node.get(part) if isinstance(node, dict) else None
    if path.startswith("active."):
        return "the form shows times in UTC to the minute"
    if isinstance(node, str) and ("\n" in node or "\r" in node):
        return "a one-line box cannot hold a line break"
    if isinstance(node, str) and node != node.strip():
        return "the form trims spaces at either end"
    if isinstance(node, list) and any(isinstance(v, str) and "," in v for v in node):
        return "a comma-separated box cannot hold a comma inside an item"
    if isinstance(node, int | float | bool) and path.endswith(".value"):
        return "the form reads this value as text"
    return "the form has no place for it"
