"""Why a rule did or did not fire: its conditions evaluated one by one against a fact.

Pure Python, with exactly the semantics the compiled durable_rules form has:

- a condition on a value the fact does not have (no model, no such page visit, a
  customer without a tier) is false — and stays false under ``not``: an unknown value
  never makes a rule fire; only ``exists`` tests presence (``not exists``: missing);
- a custom customer attribute's value of another type than the condition's (text where
  a number is compared) is false in the same way: customers' attributes are not typed;
- ``not`` is pushed down to the leaves (De Morgan), as the compiler does.

The decision itself always comes from durable_rules; this module explains it (the admin's
"try it" panel, ``decisions rulesets`` dry runs) and the tests check that both agree.
"""

from __future__ import annotations

from typing import Any

from rulesets.facts import fact_key
from rulesets.language import from_attributes


def holds(node: dict[str, Any], fact: dict[str, Any], negate: bool = False) -> bool:
    return bool(explain(node, fact, negate)["result"])


def explain(node: dict[str, Any], fact: dict[str, Any], negate: bool = False) -> dict[str, Any]:
    """The condition tree with ``result`` on every node and ``actual`` on every leaf."""
    if "all" in node or "any" in node:
        kind = "all" if "all" in node else "any"
        parts = [explain(child, fact, negate) for child in node[kind]]
        conj = (kind == "all") != negate
        results = [p["result"] for p in parts]
        return {kind: parts, "result": all(results) if conj else any(results)}
    if "not" in node:
        inner = explain(node["not"], fact, not negate)
        return {"not": inner, "result": inner["result"]}
    path, op, value = node["field"], node["op"], node.get("value")
    actual = fact.get(fact_key(path))
    out: dict[str, Any] = {"field": path, "op": op}
    if "value" in node:
        out["value"] = value
    out["actual"] = actual
    if op == "exists":
        out["result"] = (actual is not None) != negate
    elif actual is None:
        out["result"] = False
        out["missing"] = True
    elif from_attributes(path) and not comparable(op, actual, value):
        out["result"] = False  # a customer's value of another type: as if unknown
        out["mismatch"] = True
    else:
        out["result"] = _compare(op, actual, value) != negate
    return out


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else "other"


def comparable(op: str, actual: Any, value: Any) -> bool:
    """Whether ``actual`` has the type the condition compares: a number for ``gt`` or
    ``between``, text for ``contains`` and ``prefix``, else the type of the value (of the
    list's first item for ``in``). For fields whose values may be of any type (custom
    customer attributes): a value of another type matches nothing, negated or not."""
    if op in ("contains", "prefix"):
        wanted = "string"
    elif op in ("between", "within"):
        wanted = "number"
    elif op in ("in", "not_in"):
        wanted = _kind(value[0]) if isinstance(value, list) and value else "other"
    else:
        wanted = _kind(value)
    return _kind(actual) == wanted


def typed_holds(op: str, actual: Any, value: Any, negate: bool) -> bool:
    """A leaf on a field of any type: false when unknown or of another type (``not`` or
    not), else the comparison."""
    return actual is not None and comparable(op, actual, value) \
        and _compare(op, actual, value) != negate


def _compare(op: str, actual: Any, value: Any) -> bool:
    try:
        if op == "eq":
            return bool(actual == value)
        if op == "ne":
            return bool(actual != value)
        if op == "gt":
            return bool(actual > value)
        if op == "gte":
            return bool(actual >= value)
        if op == "lt":
            return bool(actual < value)
        if op == "lte":
            return bool(actual <= value)
        if op == "between":
            return bool(value[0] <= actual <= value[1])
        if op == "within":
            return bool(0 <= actual <= value)
        if op == "in":
            return actual in value
        if op == "not_in":
            return actual not in value
        if op == "contains":
            return isinstance(actual, list | str) and value in actual
        if op == "prefix":
            return isinstance(actual, str) and actual.startswith(value)
    except TypeError:  # a value of the wrong type compares false, like a missing one
        return False
    raise ValueError(f"unknown operator {op!r}")
