"""How the admin words things for marketers: money, a rule's status, strategies, slots.

Money is shown in the shop's currency (``DECISIONS_CURRENCY``, an ISO 4217 code). A
rule's status combines ``enabled`` and its active window, as of now. Strategy and slot
names are the storefront's identifiers; marketers see them in words, with the identifier
kept for unknown ones (a strategy or slot added later still shows).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CHF": "CHF ", "CAD": "CA$",
           "AUD": "A$", "SEK": "SEK ", "NOK": "NOK ", "DKK": "DKK ", "PLN": "PLN "}
NO_CENTS = {"JPY"}

STRATEGY_LABELS = {
    "covisit": "Viewed together with this one",
    "category_top": "Category best sellers",
    "top_sellers": "Best sellers overall",
    "recently_viewed": "Recently viewed by the shopper",
    "next_click": "What the shopper is likely to click next",
    "top_viewed": "Most viewed",
    "product_list": "The products listed",
    "similar": "Similar products (same category)",
}
# the storefront's slots the starter rules and the demo use; rules may name others
SLOT_LABELS = {
    "default": "Default",
    "home": "Home page",
    "product_page": "Product page",
    "cart": "Cart",
    "checkout": "Checkout",
    "category_page": "Category page",
}


def money(value: Any, currency: str = "USD") -> str:
    """``$5.00``, ``€1,234.50``, ``¥500``; a value that is not a number is shown as it is."""
    try:
        amount = float(value)
    except (TypeError, ValueError):
        return str(value)
    code = currency.upper()
    digits = 0 if code in NO_CENTS else 2
    text = f"{abs(amount):,.{digits}f}"
    symbol = SYMBOLS.get(code)
    body = f"{symbol}{text}" if symbol else f"{text} {code}"
    return f"-{body}" if amount < 0 else body


def strategy_label(name: str) -> str:
    return STRATEGY_LABELS.get(name, name.replace("_", " "))


def slot_label(name: str) -> str:
    return SLOT_LABELS.get(name, name.replace("_", " ").capitalize())


@dataclass(frozen=True)
class Status:
    kind: str  # on | off | scheduled | ended
    text: str


def _parse(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _day(ts: datetime) -> str:
    ts = ts.astimezone(UTC)
    return f"{ts:%b} {ts.day}, {ts:%Y}" + (f" {ts:%H:%M} UTC" if (ts.hour, ts.minute) != (0, 0)
                                             else "")


def rule_status(rule: dict[str, Any], now: datetime | None = None) -> Status:
    """Whether the rule can fire now, in words: "On", "Off", "Starts Jun 1, 2026", …"""
    if not rule.get("enabled", True):
        return Status("off", "Off (disabled)")
    active = rule.get("active") or {}
    start, until = _parse(active.get("from")), _parse(active.get("until"))
    now = now or datetime.now(UTC)
    if until is not None and now >= until:
        return Status("ended", f"Ended {_day(until)}")
    if start is not None and now < start:
        return Status("scheduled", f"Starts {_day(start)}"
                      + (f", ends {_day(until)}" if until else ""))
    if until is not None:
        return Status("on", f"On until {_day(until)}")
    return Status("on", "On, always")


def datetime_local(value: Any) -> str:
    """A stored ISO time as the value of an ``<input type="datetime-local">`` (UTC)."""
    ts = _parse(value)
    if ts is None:
        return str(value or "")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def known_slots(documents: list[dict[str, Any]]) -> list[str]:
    """The storefront's usual slots and every slot the given rulesets already use."""
    used = {str(params.get("slot")) for doc in documents for rule in doc.get("rules") or []
            for action in rule.get("then") or [] if isinstance(action, dict)
            for kind, params in action.items() if kind == "recommend"
            and isinstance(params, dict) and params.get("slot")}
    return list(SLOT_LABELS) + sorted(used - set(SLOT_LABELS))


def rounded(value: Any) -> Any:
    """A float as people read it: 0.0552 (three significant digits below 1), 1234.57."""
    if not isinstance(value, float) or value != value or value in (float("inf"), float("-inf")):
        return value
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    text = f"{value:.3g}" if abs(value) < 1 else f"{round(value, 2):.2f}".rstrip("0")
    return text.rstrip(".")


def moment(value: Any) -> str:
    """A stored ISO time for people: ``2026-12-05 22:42 UTC``."""
    ts = _parse(value)
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if ts else str(value or "")
