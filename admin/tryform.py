"""Try-it's event form: one small form per event type instead of raw JSON.

Each event type of the contract (and the worker's ``timer``) gets its properties as
labelled inputs; ``event_from_form`` turns the posted values into the event JSON that
try-it evaluates (numbers typed, required properties named when missing), and
``form_values`` fills the inputs from an event (the sample, or a shopper's last one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from decisions.core.events import INTERNAL_TYPES, NUMBER, PROPERTIES

TYPES: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    **PROPERTIES, "timer": {"timer": INTERNAL_TYPES["timer"]["timer"]}}
TYPE_LABELS = {
    "page_view": "Page view", "product_view": "Product view", "click": "Click",
    "add_to_cart": "Add to cart", "remove_from_cart": "Remove from cart",
    "purchase": "Purchase", "search": "Search", "consent": "Consent",
    "timer": "Timer (no activity for a while)",
}
LABELS = {
    "page": "Page (home, category, product, cart, checkout, …)", "url": "URL",
    "product_id": "Product id", "category": "Category", "price": "Unit price",
    "quantity": "Quantity", "element": "Element clicked", "order_id": "Order id",
    "total": "Order total", "items": "Items: one per line, product id, price, quantity",
    "query": "Search text", "granted": "Consent given", "timer": "Timer (e.g. idle_30m)",
}
PLACEHOLDERS = {"items": "p-1, 120, 2\np-2, 80, 1", "page": "checkout", "timer": "idle_30m"}


def inputs(event_type: str) -> list[dict[str, Any]]:
    """The inputs of one event type: name, label, kind (text|number|integer|bool|lines)."""
    out = []
    for name, (types, required) in TYPES[event_type].items():
        kind = ("number" if types == NUMBER else "integer" if types == (int,)
                else "bool" if types == (bool,) else "lines" if types == (list,) else "text")
        out.append({"name": name, "label": LABELS.get(name, name), "kind": kind,
                    "required": required, "placeholder": PLACEHOLDERS.get(name, "")})
    return out


def _number(raw: str, integer: bool) -> int | float:
    value = float(raw)
    if integer:
        if value != int(value):
            raise ValueError
        return int(value)
    return value


def event_from_form(form: Mapping[str, Any], user_id: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The event the form describes, and errors by input name (``prop.price``)."""
    etype = str(form.get("etype") or "add_to_cart")
    if etype not in TYPES:
        return {}, {"etype": f"choose one of {', '.join(TYPES)}"}
    props: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for spec in inputs(etype):
        key = f"prop.{etype}.{spec['name']}"
        raw = str(form.get(key) or "").strip()
        if spec["kind"] == "bool":
            props[spec["name"]] = raw in ("on", "true", "1")
            continue
        if not raw:
            if spec["required"]:
                errors[key] = "required"
            continue
        try:
            if spec["kind"] in ("number", "integer"):
                props[spec["name"]] = _number(raw, spec["kind"] == "integer")
            elif spec["kind"] == "lines":
                props[spec["name"]] = [_item(line) for line in raw.splitlines() if line.strip()]
            else:
                props[spec["name"]] = raw
        except ValueError:
            errors[key] = ("each line: product id, price, quantity" if spec["kind"] == "lines"
                           else "a whole number" if spec["kind"] == "integer" else "a number")
    return {"type": etype, "user_id": user_id or "u-try", "properties": props}, errors


def _item(line: str) -> dict[str, Any]:
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != 3 or not parts[0]:
        raise ValueError
    return {"product_id": parts[0], "price": _number(parts[1], False),
            "quantity": _number(parts[2], True)}


def form_values(event: Mapping[str, Any]) -> dict[str, str]:
    """Input values (``prop.<type>.<name>``) describing ``event``."""
    etype = str(event.get("type") or "")
    out = {"etype": etype}
    if etype not in TYPES:
        return out
    props = event.get("properties") or {}
    for spec in inputs(etype):
        value = props.get(spec["name"])
        key = f"prop.{etype}.{spec['name']}"
        if value is None:
            out[key] = ""
        elif spec["kind"] == "lines" and isinstance(value, list):
            out[key] = "\n".join(f"{i.get('product_id')}, {i.get('price')}, {i.get('quantity')}"
                                 for i in value if isinstance(i, dict))
        elif spec["kind"] == "bool":
            out[key] = "on" if value else ""
        else:
            out[key] = f"{value:g}" if isinstance(value, float) else str(value)
    return out
