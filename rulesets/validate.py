"""Validation is ours: durable_rules silently accepts what it does not understand.

``validate(document)`` returns the normalised document or raises ``ValidationError``
whose details name each problem by path (``rules[2].when.all[1].value``) and, when the
document came from a file, by line.
"""

from __future__ import annotations

import difflib
import math
import re
from datetime import datetime
from typing import Any

from decisions.core.errors import FieldError, ValidationError
from decisions.core.events import parse_time
from rulesets.document import Lines, line_of
from rulesets.language import (
    ACTION_CATALOG,
    ACTIONS,
    ANY,
    BOOL,
    BUDGET_PARAMS,
    CAP_PARAMS,
    FIELDS,
    HOLDOUT_PARAMS,
    LIST,
    NUMBER,
    OPERATORS,
    RULE_KEYS,
    RULESET_KEYS,
    STRING,
    attribute_problem,
    field_type,
    value_type,
    window_too_long,
)

NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,99}$")
# decisions.runtime.recommend.STRATEGIES (the runtime sits above the language; a test
# keeps the two the same)
STRATEGIES = ("next_click", "covisit", "category_top", "top_sellers", "top_viewed",
              "recently_viewed", "product_list", "similar")
_TYPE_WORD = {NUMBER: "a number", STRING: "a string", BOOL: "true or false", LIST: "a list",
              ANY: "a number, a string or true/false"}


class _Collector:
    def __init__(self, lines: Lines | None) -> None:
        self.errors: list[FieldError] = []
        self.lines = lines or {}

    def __call__(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message, line_of(self.lines, path)))


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _value_ok(type_: str, v: Any) -> bool:
    if type_ == NUMBER:
        return _is_number(v)
    if type_ == STRING:
        return isinstance(v, str)
    if type_ == BOOL:
        return isinstance(v, bool)
    return False


def _attribute_type(kind: str, value: Any) -> str:
    """The type a condition on a custom customer attribute compares, read off its value
    (``ANY`` when the value says nothing, e.g. ``exists``)."""
    if kind == "range":
        return NUMBER
    if kind == "element":
        return STRING
    if kind == "list" and isinstance(value, list) and value:
        value = value[0]
    return value_type(value) or ANY


def validate(document: Any, lines: Lines | None = None) -> dict[str, Any]:
    err = _Collector(lines)
    if not isinstance(document, dict):
        err("", "a ruleset must be an object with name and rules")
        raise ValidationError("invalid ruleset", err.errors)
    for key in document:
        if key not in RULESET_KEYS:
            err(str(key), f"unknown field (expected one of {', '.join(sorted(RULESET_KEYS))})")
    name = document.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        err("name", "required: lowercase letters, digits, - and _ (up to 100)")
    if "description" in document and not isinstance(document["description"], str):
        err("description", "expected a string")
    for flag in ("stacking", "four_eyes"):
        if flag in document and not isinstance(document[flag], bool):
            err(flag, "expected true or false")
    rules = document.get("rules")
    if not isinstance(rules, list) or not rules:
        err("rules", "required: a non-empty list of rules")
        rules = []
    seen: dict[str, int] = {}
    for i, rule in enumerate(rules):
        _rule(rule, f"rules[{i}]", err, seen)
    _economics(document, err)
    if err.errors:
        raise ValidationError("invalid ruleset", err.errors)
    return normalise(document)


def _rule(rule: Any, path: str, err: _Collector, seen: dict[str, int]) -> None:
    if not isinstance(rule, dict):
        err(path, "expected an object")
        return
    for key in rule:
        if key not in RULE_KEYS:
            err(f"{path}.{key}", f"unknown field (expected one of {', '.join(sorted(RULE_KEYS))})")
    name = rule.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        err(f"{path}.name", "required: lowercase letters, digits, - and _ (up to 100)")
    elif name in seen:
        err(f"{path}.name", f'duplicate rule name "{name}" (also rules[{seen[name]}])')
    else:
        seen[name] = int(path[6:-1])
    if "description" in rule and not isinstance(rule["description"], str):
        err(f"{path}.description", "expected a string")
    if "priority" in rule and not (isinstance(rule["priority"], int)
                                   and not isinstance(rule["priority"], bool)):
        err(f"{path}.priority", f"expected a whole number, got {_show(rule['priority'])}")
    if "enabled" in rule and not isinstance(rule["enabled"], bool):
        err(f"{path}.enabled", "expected true or false")
    _active(rule.get("active"), f"{path}.active", err)
    if _always(rule.get("when")):
        pass  # no conditions: the rule fires on every event (within its active window)
    else:
        bounds: dict[str, list[tuple[str, Any, str]]] = {}
        _node(rule["when"], f"{path}.when", err, bounds)
    then = rule.get("then")
    if not isinstance(then, list) or not then:
        err(f"{path}.then", "required: a non-empty list of actions")
    else:
        for j, action in enumerate(then):
            _action(action, f"{path}.then[{j}]", err)


def _always(when: Any) -> bool:
    """A rule without conditions: ``when`` left out, ``{}`` or ``{all: []}``."""
    return when is None or when == {} or when == {"all": []}


def _active(active: Any, path: str, err: _Collector) -> None:
    if active is None:
        return
    if not isinstance(active, dict):
        err(path, "expected an object with from and/or until")
        return
    parsed = {}
    for key, value in active.items():
        if key not in ("from", "until"):
            err(f"{path}.{key}", "unknown field (expected from, until)")
            continue
        if value is None:
            continue
        try:
            parsed[key] = parse_time(value if isinstance(value, datetime) else str(value))
        except ValueError:
            err(f"{path}.{key}", f"expected an ISO 8601 date-time, got {_show(value)}")
    if "from" in parsed and "until" in parsed:
        try:
            if parsed["from"] >= parsed["until"]:
                err(path, "from must be before until")
        except TypeError:
            err(path, "from and until must both have a timezone or neither")


def _node(node: Any, path: str, err: _Collector, bounds: dict[str, list[Any]]) -> None:
    if not isinstance(node, dict):
        err(path, "expected a condition object (all, any, not, or field/op/value)")
        return
    if not node:
        err(path, "empty condition: give all, any, not, or field/op/value")
        return
    groups = [k for k in ("all", "any", "not") if k in node]
    if groups:
        if len(node) != 1:
            err(path, "a group holds exactly one of all, any, not")
            return
        kind = groups[0]
        child = node[kind]
        if kind == "not":
            _node(child, f"{path}.not", err, {})
            return
        if not isinstance(child, list) or not child:
            err(f"{path}.{kind}", "empty condition group: add at least one condition")
            return
        local: dict[str, list[Any]] = {} if kind == "any" else bounds
        for i, item in enumerate(child):
            _node(item, f"{path}.{kind}[{i}]", err, local if kind == "all" else {})
        if kind == "all":
            _contradictions(local, path, err)
        return
    _leaf(node, path, err, bounds)


def _leaf(node: dict[str, Any], path: str, err: _Collector, bounds: dict[str, list[Any]]) -> None:
    for key in node:
        if key not in ("field", "op", "value"):
            err(f"{path}.{key}", "unknown field (expected field, op, value; or all/any/not)")
    field = node.get("field")
    op = node.get("op")
    if not isinstance(field, str):
        err(f"{path}.field", "required: a field such as state.cart_value")
        return
    ftype = field_type(field)
    problem = attribute_problem(field)
    if problem:
        err(f"{path}.field", problem)
        return
    if ftype is None:
        close = difflib.get_close_matches(field, FIELDS, n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        kind = "state feature" if field.startswith("state.") else "field"
        if window_too_long(field[6:]):
            hint = " (windows run from 1m to 30d: the event log keeps 30 days)"
        err(f"{path}.field", f'unknown {kind} "{field}"{hint}')
        return
    if op not in OPERATORS:
        err(f"{path}.op", f"unknown operator {_show(op)} (expected one of "
            f"{', '.join(OPERATORS)})")
        return
    types, kind = OPERATORS[op]
    if ftype == ANY and kind != "none":  # a custom attribute: the value says its type
        ftype = _attribute_type(kind, node.get("value"))
        if ftype != ANY and ftype not in types:
            wanted = " or ".join(_TYPE_WORD[t] for t in types if t != LIST)
            err(f"{path}.op", f'"{op}" does not apply to {field} compared with '
                f"{_TYPE_WORD[ftype]} (give {wanted})")
            return
    if ftype != ANY and ftype not in types:
        err(f"{path}.op", f'"{op}" does not apply to {field} ({ftype})')
        return
    value = node.get("value")
    vpath = f"{path}.value"
    if kind == "none":
        if "value" in node:
            err(vpath, '"exists" takes no value')
        return
    if "value" not in node:
        err(vpath, "required")
        return
    if kind == "same":
        if not _value_ok(ftype, value):
            err(vpath, f"expected {_TYPE_WORD[ftype]}, got {_show(value)}")
            return
    elif kind == "range":
        if not (isinstance(value, list) and len(value) == 2 and all(map(_is_number, value))):
            err(vpath, f"expected [low, high] numbers, got {_show(value)}")
            return
        if value[0] > value[1]:
            err(vpath, f"low {value[0]} is above high {value[1]}")
            return
    elif kind == "list":
        if not isinstance(value, list) or not value:
            err(vpath, f"expected a non-empty list, got {_show(value)}")
            return
        for i, item in enumerate(value):
            if not _value_ok(ftype, item):
                err(f"{vpath}[{i}]", f"expected {_TYPE_WORD[ftype]}, got {_show(item)}")
    elif kind == "element":
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            err(vpath, f"expected a string or number, got {_show(value)}")
            return
        if ftype == STRING and not isinstance(value, str):
            err(vpath, f"expected a string, got {_show(value)}")
            return
    if field == "event.type":
        from rulesets.language import EVENT_TYPE_CHOICES

        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and v not in EVENT_TYPE_CHOICES:
                err(vpath, f'unknown event type "{v}"')
    bounds.setdefault(field, []).append((op, value, path))


def _contradictions(bounds: dict[str, list[Any]], path: str, err: _Collector) -> None:
    """Detect conditions in one ``all`` group that can never hold together."""
    for field, conds in bounds.items():
        lo, hi = -math.inf, math.inf
        lo_open = hi_open = False
        equals: set[Any] = set()
        for op, value, _ in conds:
            if op == "eq":
                equals.add(value if not isinstance(value, list) else tuple(value))
            if not _is_number(value) and op not in ("between", "within"):
                continue
            if op in ("gt", "gte") and (value > lo or (value == lo and op == "gt")):
                lo, lo_open = value, op == "gt"
            elif op in ("lt", "lte") and (value < hi or (value == hi and op == "lt")):
                hi, hi_open = value, op == "lt"
            elif op == "eq":
                if value > lo:
                    lo, lo_open = value, False
                if value < hi:
                    hi, hi_open = value, False
            elif op == "between":
                lo, hi = max(lo, value[0]), min(hi, value[1])
            elif op == "within":
                lo, hi = max(lo, 0), min(hi, value)
        empty = lo > hi or (lo == hi and (lo_open or hi_open))
        if len(equals) > 1 or empty:
            err(path, f"contradictory conditions on {field}: they can never all hold")


def _action(action: Any, path: str, err: _Collector) -> None:
    if not isinstance(action, dict) or len(action) != 1:
        err(path, f"expected one action such as {{discount: {{percent: 10}}}} "
            f"(one of {', '.join(ACTIONS)})")
        return
    (name, params), = action.items()
    apath = f"{path}.{name}"
    if name not in ACTIONS:
        err(path, f'unknown action "{name}" (expected one of {", ".join(ACTIONS)})')
        return
    if not isinstance(params, dict):
        err(apath, "expected an object of parameters")
        return
    allowed = {p.name: (p.type, p.required) for p in ACTION_CATALOG[name].params}
    if name == "discount":
        has = [k for k in ("percent", "amount") if k in params]
        if len(has) != 1:
            err(apath, "give exactly one of percent or amount")
        if _is_number(params.get("percent")) and not 0 < params["percent"] <= 100:
            err(f"{apath}.percent", "must be above 0 and at most 100")
        if _is_number(params.get("amount")) and params["amount"] <= 0:
            err(f"{apath}.amount", "must be above 0")
    elif name == "recommend":
        if isinstance(params.get("strategy"), str) and params["strategy"] not in STRATEGIES:
            err(f"{apath}.strategy", f'unknown strategy "{params["strategy"]}" '
                f"(expected one of {', '.join(STRATEGIES)})")
        if params.get("strategy") == "product_list" and not params.get("products"):
            err(f"{apath}.products", "required by the product_list strategy")
    for key, value in params.items():
        if key not in allowed:
            err(f"{apath}.{key}", f"unknown parameter (expected one of {', '.join(allowed)})")
        elif allowed[key][0] == LIST:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                err(f"{apath}.{key}", "expected a list of product ids")
        elif not _value_ok(allowed[key][0], value):
            err(f"{apath}.{key}", f"expected {_TYPE_WORD[allowed[key][0]]}, got {_show(value)}")
    for key, (_, required) in allowed.items():
        if required and key not in params:
            err(f"{apath}.{key}", "required")
    for key in ("expires_minutes", "per_user_cap", "count"):
        if _is_number(params.get(key)) and params[key] <= 0:
            err(f"{apath}.{key}", "must be above 0")
    for param in ACTION_CATALOG[name].params:  # the catalog's own constraints
        given: Any = params.get(param.name)
        if not _is_number(given) or param.name in ("expires_minutes", "per_user_cap", "count"):
            if isinstance(given, str) and param.choices and given not in param.choices:
                err(f"{apath}.{param.name}", f'unknown value "{given}" (expected one of '
                    f"{', '.join(param.choices)})")
            continue
        if param.positive and given <= 0:
            err(f"{apath}.{param.name}", "must be above 0")
        elif param.whole and given != int(given):
            err(f"{apath}.{param.name}", "must be a whole number")


def normalise(document: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults so stored versions and diffs are explicit."""
    out = {
        "name": document["name"],
        "description": document.get("description", ""),
        "stacking": bool(document.get("stacking", False)),
        "four_eyes": bool(document.get("four_eyes", False)),
        "rules": [],
    }
    for rule in document["rules"]:
        active = rule.get("active") or {}
        out["rules"].append({
            "name": rule["name"],
            "description": rule.get("description", ""),
            "priority": int(rule.get("priority", 0)),
            "enabled": bool(rule.get("enabled", True)),
            "active": {k: (v.isoformat() if isinstance(v, datetime) else v)
                       for k, v in active.items() if v is not None},
            "when": {"all": []} if _always(rule.get("when")) else rule["when"],
            "then": rule["then"],
        })
    _normalise_economics(document, out)
    return out


# -- offer economics (#19): holdouts and frequency caps -----------------------------------
def _economics(document: dict[str, Any], err: _Collector) -> None:
    if "holdout" in document:
        _holdout(document["holdout"], "holdout", err)
    caps = document.get("caps")
    if "caps" in document:
        if not isinstance(caps, dict):
            err("caps", "expected an object with per_day and/or per_week")
        else:
            _params(caps, "caps", CAP_PARAMS, err)
            for key in ("per_day", "per_week"):
                value: Any = caps.get(key)
                if _is_number(value) and (value < 1 or value != int(value)):
                    err(f"caps.{key}", "must be a whole number of at least 1")
    for i, rule in enumerate(document.get("rules") or []):
        if isinstance(rule, dict) and "holdout" in rule:
            _holdout(rule["holdout"], f"rules[{i}].holdout", err)
        if isinstance(rule, dict) and "budget" in rule:
            _budget(rule["budget"], f"rules[{i}].budget", err)
    if "budget" in document:
        _budget(document["budget"], "budget", err)


def _budget(spec: Any, path: str, err: _Collector) -> None:
    if not isinstance(spec, dict):
        err(path, "expected an object with amount and/or grants (and optionally campaign)")
        return
    _params(spec, path, BUDGET_PARAMS, err)
    if "amount" not in spec and "grants" not in spec:
        err(path, "give amount (money) and/or grants (offers)")
    amount: Any = spec.get("amount")
    if _is_number(amount) and not 0 < amount <= 1e12:
        err(f"{path}.amount", "must be above 0")
    grants: Any = spec.get("grants")
    if _is_number(grants) and (grants < 1 or grants != int(grants) or grants > 1e12):
        err(f"{path}.grants", "must be a whole number of at least 1")
    campaign = spec.get("campaign")
    if isinstance(campaign, str) and not NAME.match(campaign.replace("/", "-")):
        err(f"{path}.campaign", "lowercase letters, digits, -, _ and / (up to 100)")


def _holdout(spec: Any, path: str, err: _Collector) -> None:
    if not isinstance(spec, dict):
        err(path, "expected an object with share and optionally experiment")
        return
    _params(spec, path, HOLDOUT_PARAMS, err)
    share: Any = spec.get("share")
    if "share" not in spec:
        err(f"{path}.share", "required")
    elif _is_number(share) and not 0 < share <= 0.5:
        err(f"{path}.share", "must be above 0 and at most 0.5 (a share, not a percentage)")
    experiment = spec.get("experiment")
    if isinstance(experiment, str) and not NAME.match(experiment.replace("/", "-")):
        err(f"{path}.experiment", "lowercase letters, digits, -, _ and / (up to 100)")


def _params(spec: dict[str, Any], path: str, params: tuple[Any, ...], err: _Collector) -> None:
    allowed = {p.name: p.type for p in params}
    for key, value in spec.items():
        if key not in allowed:
            err(f"{path}.{key}", f"unknown field (expected one of {', '.join(allowed)})")
        elif not _value_ok(allowed[key], value):
            err(f"{path}.{key}", f"expected {_TYPE_WORD[allowed[key]]}, got {_show(value)}")


def _normalise_economics(document: dict[str, Any], out: dict[str, Any]) -> None:
    """Holdouts and caps are kept only where given (older versions stay as they were)."""
    for key in ("holdout", "caps", "budget"):
        if document.get(key):
            out[key] = dict(document[key])
    for rule, normal in zip(document["rules"], out["rules"], strict=True):
        for key in ("holdout", "budget"):
            if rule.get(key):
                normal[key] = dict(rule[key])
