"""What the rule language knows: fields (with types), operators, actions.

This catalog drives validation, compilation and the admin's field picker, so the three
can never disagree. A field path is ``<source>.<name>``:

- ``event.type``, ``event.<property>`` — the current event;
- ``state.<feature>`` — the user's state as of the event (``decisions/runtime/state.lua``);
- ``customer.<attribute>`` — customer attributes (PostgreSQL ``customers``);
- ``user.segments`` — segments the user is in (customer record and rule-added);
- ``score.<model>`` — model predictions (absent when no model is active: never matches);
- ``time.hour`` / ``time.weekday`` — event time (UTC).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from decisions.core.events import EVENT_TYPES

NUMBER, STRING, BOOL, LIST = "number", "string", "boolean", "list"


@dataclass(frozen=True)
class Field:
    path: str
    type: str
    label: str
    choices: tuple[str, ...] = ()


EVENT_TYPE_CHOICES = (*EVENT_TYPES, "timer")
WINDOWS = ("5m", "1h", "24h", "30d")
STATE_TYPES = ("page_view", "product_view", "click", "add_to_cart", "remove_from_cart",
               "purchase", "search")
PAGES = ("home", "category", "product", "cart", "checkout", "search", "account")

FIELDS: dict[str, Field] = {}


def _add(path: str, type_: str, label: str, choices: tuple[str, ...] = ()) -> None:
    FIELDS[path] = Field(path, type_, label, choices)


_add("event.type", STRING, "Event type", EVENT_TYPE_CHOICES)
for _name, _type, _label in (
    ("page", STRING, "Page (page_view)"), ("url", STRING, "URL (page_view)"),
    ("product_id", STRING, "Product id"), ("category", STRING, "Product category"),
    ("price", NUMBER, "Price"), ("quantity", NUMBER, "Quantity"),
    ("element", STRING, "Clicked element"), ("order_id", STRING, "Order id"),
    ("total", NUMBER, "Order total"), ("query", STRING, "Search query"),
    ("timer", STRING, "Timer name (timer events)"), ("granted", BOOL, "Consent granted"),
):
    _add(f"event.{_name}", _type, _label)
for _name, _label in (
    ("cart_value", "Cart value"), ("cart_items", "Items in cart (units)"),
    ("cart_lines", "Distinct products in cart"), ("order_count", "Orders placed"),
    ("lifetime_value", "Lifetime value"), ("session_events", "Events this session"),
    ("session_product_views", "Product views this session"),
    ("session_page_views", "Page views this session"),
    ("session_seconds", "Seconds since session start"),
    ("product_view_seconds", "Seconds on product pages this session"),
    ("since_same_product_view",
     "Seconds since this product was last viewed before now (missing on a first view)"),
    ("days_since_first_seen", "Days since first visit"),
    ("days_since_last_purchase", "Days since last purchase (−1 if no purchase yet)"),
    ("distinct_categories_30d", "Categories viewed in 30 days"),
):
    _add(f"state.{_name}", NUMBER, _label)
_add("state.visit_count", NUMBER, "Visits (sessions) ever, this one included")
_add("state.first_visit_ever", BOOL, "First visit ever (the user's first session we saw)")
for _name, _label in (
    ("cart_products", "Products in cart"), ("recent_products", "Recently viewed products"),
    ("session_products", "Products clicked this session"),
    ("recent_categories", "Recently viewed categories"),
):
    _add(f"state.{_name}", LIST, _label)
for _t in STATE_TYPES:
    for _w in WINDOWS:
        _add(f"state.count_{_t}_{_w}", NUMBER, f"Count of {_t} in the last {_w}")
    _add(f"state.since_{_t}", NUMBER, f"Seconds since last {_t} (−1 if none yet)")
for _p in PAGES:
    _add(f"state.since_page_{_p}", NUMBER, f"Seconds since last view of the {_p} page")
_add("customer.tier", STRING, "Customer tier")
_add("customer.country", STRING, "Country (ISO code)")
_add("customer.consent", BOOL, "Personalization consent")
_add("customer.signup_days", NUMBER, "Days since signup")
_add("customer.lifetime_value", NUMBER, "Lifetime value (from the CRM)")
_add("user.segments", LIST, "Segments")
_add("time.hour", NUMBER, "Hour of day (UTC, event time)")
_add("time.weekday", NUMBER, "Weekday (0 = Monday, event time)")
_add("score.purchase_intent", NUMBER, "Purchase-intent score (0-1)")
_add("score.churn_risk", NUMBER, "Churn-risk score (0-1)")

# -- counts and recency per product, category and page (#23) -----------------------------
# ``state.count_<type>_<window>[_<scope>]`` and ``state.since_<type>_<scope>``: any window
# from 1m to 30d (``10m``, ``2h``, ``7d``); scopes: the event's own product, category or
# page (``this_product``, ``this_category``, ``this_page``) or a named one
# (``product_<id>``, ``category_<name>``, ``page_<name>``). Computed on demand by the state
# script (decisions/runtime/state.lua) from the user's per-scope event log, in event time.
SCOPES = ("this_product", "this_category", "this_page", "product_<id>", "category_<name>",
          "page_<name>")
MAX_WINDOW_MS = 30 * 86_400_000  # the event log keeps 30 days
_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}
_TYPES_RE = "|".join(STATE_TYPES)
_SCOPE_RE = (r"(?P<scope>this_product|this_category|this_page"
             r"|product_(?P<product>[A-Za-z0-9_\-]{1,60})"
             r"|category_(?P<category>[a-z0-9_\-]{1,60})|page_(?P<page>[a-z0-9_\-]{1,40}))")
_COUNT_RE = re.compile(rf"^count_(?P<type>{_TYPES_RE})_(?P<window>[1-9][0-9]{{0,5}}[mhd])"
                       rf"(?:_{_SCOPE_RE})?$")
_SINCE_RE = re.compile(rf"^since_(?P<type>{_TYPES_RE})_{_SCOPE_RE}$")


@dataclass(frozen=True)
class Windowed:
    """A count or recency feature of the open families, parsed from its name."""

    name: str  # the feature (``count_product_view_24h_this_product``)
    kind: str  # "count" or "since"
    type: str  # the event type counted
    window_ms: int  # counts: the window; 0 for recency
    scope: str  # "" (all events of the type), "this_product", ..., "product", "category", "page"
    value: str = ""  # the named product / category / page


def window_ms(window: str) -> int:
    """``10m`` -> 600000 (ms)."""
    return int(window[:-1]) * _UNIT_MS[window[-1]]


def windowed(name: str) -> Windowed | None:
    """The parsed feature of a ``state.`` name of the open families, or None (also for a
    window longer than 30 days: the log does not reach back that far)."""
    m = _COUNT_RE.match(name) or _SINCE_RE.match(name)
    if m is None:
        return None
    scope = m["scope"] or ""
    value = m["product"] or m["category"] or m["page"] or ""
    if value:
        scope = scope[: -len(value) - 1]
    if name.startswith("count_"):
        ms = window_ms(m["window"])
        if ms > MAX_WINDOW_MS:
            return None
        return Windowed(name, "count", m["type"], ms, scope, value)
    return Windowed(name, "since", m["type"], 0, scope, value)


def window_too_long(name: str) -> bool:
    m = _COUNT_RE.match(name)
    return m is not None and window_ms(m["window"]) > MAX_WINDOW_MS


# the form builder's picker: a few ready-made ones (any other window or scope is typed in)
for _t in ("product_view", "click", "add_to_cart", "remove_from_cart"):
    for _scope, _what in (("this_product", "of this product"),
                          ("this_category", "in this category")):
        for _w in (*WINDOWS[:1], "10m", *WINDOWS[1:]):
            _add(f"state.count_{_t}_{_w}_{_scope}", NUMBER,
                 f"Count of {_t} {_what} in the last {_w}")
        _add(f"state.since_{_t}_{_scope}", NUMBER,
             f"Seconds since the last {_t} {_what} before now (missing if none)")
for _t in STATE_TYPES:
    _add(f"state.count_{_t}_10m", NUMBER, f"Count of {_t} in the last 10m")

# Field families with a placeholder, for the form builder and the docs: (template, label)
FIELD_FAMILIES: tuple[tuple[str, str], ...] = (
    ("state.count_<type>_<window>", "Count of <type> in the last <window> (1m to 30d)"),
    ("state.count_<type>_<window>_<scope>",
     "Count of <type> of a product, category or page in the last <window>"),
    ("state.since_<type>_<scope>",
     "Seconds since the last <type> of a product, category or page before now"),
    ("state.since_page_<page>", "Seconds since the last view of page <page>"),
    ("score.<model>", "A model's score"),
)

# Open families: any page name, any model name, any custom customer attribute
PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^state\.since_page_[a-z0-9_]{1,40}$"), NUMBER),
    (re.compile(r"^score\.[a-z][a-z0-9_]{0,40}$"), NUMBER),
)

# -- custom customer attributes (#23) ------------------------------------------------------
# ``customer.<name>``: any attribute a customer record carries besides its columns (the CRM
# import and ``PUT /v1/customers/{id}``, decisions/runtime/customer_records.py, which takes
# its names from here). Its type is not declared anywhere: a condition's value says it
# (``customer.plan eq "pro"`` compares text, ``customer.orders gt 3`` numbers), and a
# customer whose value is of another type (or who has none) does not match, negated or not.
ANY = "any"
ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
ATTRIBUTE_PLACEHOLDER = "customer.<attribute>"  # the form builder's "type its name" entry
# customer.<name> that are not attributes a rule can read, and what to use instead
NOT_ATTRIBUTES = {
    "signup_date": "use customer.signup_days (days since signup)",
    "segments": "use user.segments", "user_id": "the user is the event's user",
    "id": "the user is the event's user", "attributes": "name the attribute itself",
    "updated_at": "not readable by rules",
}
# customer fields read from the record's free attributes (not typed columns)
ATTRIBUTE_FIELDS = frozenset({"customer.lifetime_value"})


def custom_attribute(path: str) -> str | None:
    """``customer.plan`` -> ``plan`` for a custom attribute a rule can read, else None."""
    if not path.startswith("customer.") or path in FIELDS:
        return None
    name = path[9:]
    return name if ATTRIBUTE_NAME.match(name) and name not in NOT_ATTRIBUTES else None


def attribute_problem(path: str) -> str | None:
    """Why ``customer.<name>`` is not a field a rule can read (None: it is one)."""
    if not path.startswith("customer.") or path in FIELDS or custom_attribute(path):
        return None
    name = path[9:]
    if name in NOT_ATTRIBUTES:
        return f'customer.{name} is not readable by rules: {NOT_ATTRIBUTES[name]}'
    if not name or path == ATTRIBUTE_PLACEHOLDER:
        return "type the customer attribute's name (e.g. plan for customer.plan)"
    return (f'"{name}" is not a customer attribute name: lowercase letters, digits and _, '
            "starting with a letter (up to 41)")


def from_attributes(path: str) -> bool:
    """A customer field read from the record's free attributes, whose values may be of any
    type: compiled as a typed check (a value of another type never matches)."""
    return path in ATTRIBUTE_FIELDS or custom_attribute(path) is not None


def field_type(path: str) -> str | None:
    if path in FIELDS:
        return FIELDS[path].type
    if path.startswith("state.") and windowed(path[6:]) is not None:
        return NUMBER
    for pattern, type_ in PATTERNS:
        if pattern.match(path):
            return type_
    if custom_attribute(path) is not None:
        return ANY
    return None


def value_type(value: Any) -> str | None:
    """The type a condition's value has (for a custom attribute, the type it compares)."""
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int | float):
        return NUMBER
    if isinstance(value, str):
        return STRING
    return None


# operator -> (types it applies to, kind of value it takes)
OPERATORS: dict[str, tuple[tuple[str, ...], str]] = {
    "eq": ((NUMBER, STRING, BOOL), "same"),
    "ne": ((NUMBER, STRING, BOOL), "same"),
    "gt": ((NUMBER,), "same"),
    "gte": ((NUMBER,), "same"),
    "lt": ((NUMBER,), "same"),
    "lte": ((NUMBER,), "same"),
    "between": ((NUMBER,), "range"),
    "within": ((NUMBER,), "same"),  # "seconds since" fields: 0 <= x <= value
    "in": ((NUMBER, STRING), "list"),
    "not_in": ((NUMBER, STRING), "list"),
    "contains": ((LIST, STRING), "element"),
    "prefix": ((STRING,), "same"),
    "exists": ((NUMBER, STRING, BOOL, LIST), "none"),
}
OPERATOR_LABELS = {
    "eq": "is", "ne": "is not", "gt": ">", "gte": "≥", "lt": "<", "lte": "≤",
    "between": "between", "within": "within (seconds)", "in": "is one of",
    "not_in": "is none of", "contains": "contains", "prefix": "starts with",
    "exists": "is known",
}

@dataclass(frozen=True)
class ActionParam:
    """One parameter of an action, as validation checks it and the form builder shows it."""

    name: str
    type: str  # NUMBER, STRING or LIST (of product ids)
    label: str
    required: bool = False
    in_form: bool = True  # False: the form edits it another way (discount percent/amount)
    positive: bool = False  # a number above 0 (validation)
    whole: bool = False  # a whole number (validation)
    choices: tuple[str, ...] = ()  # the values it takes (validation, the form's options)


@dataclass(frozen=True)
class ActionSpec:
    """An action: its parameters, and what its handler (decisions/runtime/actions.py, by
    the same name) makes: ``offer`` (stored like offers, served by GET offers with its
    ``kind``), ``recommendation`` or ``segment``. A new action is one entry here plus one
    handler there (a test checks that every entry has its handler)."""

    label: str
    params: tuple[ActionParam, ...]
    effect: str = ""

    def param(self, name: str) -> ActionParam | None:
        return next((p for p in self.params if p.name == name), None)


# What a rule can do: the one catalog of actions and their parameters (validation, the
# form builder and the docs read it; the handlers are decisions/runtime/actions.py)
ACTION_CATALOG: dict[str, ActionSpec] = {
    "discount": ActionSpec("Discount", (
        ActionParam("percent", NUMBER, "Percent off", in_form=False),
        ActionParam("amount", NUMBER, "Amount off", in_form=False),
        ActionParam("code", STRING, "Code shown to the shopper"),
        ActionParam("min_basket", NUMBER, "Minimum basket"),
        ActionParam("expires_minutes", NUMBER, "Expires after (minutes)"),
        ActionParam("per_user_cap", NUMBER, "Offers per user in 30 days"),
        ActionParam("products", LIST, "Only for products (ids, comma-separated)"),
        ActionParam("max_per_user_ever", NUMBER, "Offers per user, ever", positive=True,
                    whole=True),
    ), effect="offer"),
    "recommend": ActionSpec("Recommendation", (
        ActionParam("strategy", STRING, "Strategy", required=True),
        ActionParam("slot", STRING, "Slot", required=True),
        ActionParam("count", NUMBER, "How many products"),
        ActionParam("category", STRING,
                    "Category (a name, or this_category: the event's)"),
        ActionParam("products", LIST, "Products (ids, comma-separated; strategy product_list)"),
        ActionParam("price", STRING, "Price against the event's product",
                    choices=("cheaper", "similar")),
    ), effect="recommendation"),
    "add_segment": ActionSpec("Add to segment", (
        ActionParam("segment", STRING, "Segment", required=True),
    ), effect="segment"),
    "free_shipping": ActionSpec("Free shipping", (
        ActionParam("code", STRING, "Code shown to the shopper"),
        ActionParam("min_basket", NUMBER, "Minimum basket"),
        ActionParam("expires_minutes", NUMBER, "Expires after (minutes)", positive=True),
        ActionParam("per_user_cap", NUMBER, "Offers per user in 30 days", positive=True,
                    whole=True),
        ActionParam("max_per_user_ever", NUMBER, "Offers per user, ever", positive=True,
                    whole=True),
    ), effect="offer"),
}
ACTIONS = tuple(ACTION_CATALOG)
RULE_KEYS = {"name", "description", "priority", "enabled", "active", "when", "then"}
RULESET_KEYS = {"name", "description", "stacking", "four_eyes", "rules"}

# -- offer economics (#19): holdouts and frequency caps -----------------------------------
# ``holdout: {share, experiment}`` on a ruleset or a rule (rulesets/holdout.py);
# ``caps: {per_day, per_week}`` on a ruleset: offers per shopper across its rules
# (decisions/runtime/offers.py; the global caps are settings).
HOLDOUT_PARAMS: tuple[ActionParam, ...] = (
    ActionParam("share", NUMBER, "Hold out (share of eligible shoppers, 0-0.5)"),
    ActionParam("experiment", STRING, "Experiment name (a new name reshuffles the groups)"),
)
CAP_PARAMS: tuple[ActionParam, ...] = (
    ActionParam("per_day", NUMBER, "Offers per shopper per day (all rules of the ruleset)"),
    ActionParam("per_week", NUMBER, "Offers per shopper per week (all rules of the ruleset)"),
)
RULE_KEYS = RULE_KEYS | {"holdout"}
# A rule's parameter groups (``holdout: {share, experiment}``) as the rule editor shows
# them, generically: one input per parameter, typed by it. A new group of rule parameters
# is added to RULE_PARAM_GROUPS (below, after budgets) and RULE_KEYS to appear in the form.
RULESET_KEYS = RULESET_KEYS | {"holdout", "caps"}

# -- offer economics (#19): budgets ------------------------------------------------------
# ``budget: {amount, grants, campaign}`` on a ruleset or a rule: the most discount (money)
# and offers it grants in total, reserved at grant (rulesets/budget.py)
BUDGET_PARAMS: tuple[ActionParam, ...] = (
    ActionParam("amount", NUMBER, "Discount budget (money, in total)"),
    ActionParam("grants", NUMBER, "At most this many offers (in total)"),
    ActionParam("campaign", STRING, "Campaign (a new name starts counting from nothing)"),
)
RULE_KEYS = RULE_KEYS | {"budget"}
RULESET_KEYS = RULESET_KEYS | {"budget"}
RULE_PARAM_GROUPS: dict[str, tuple[str, tuple[ActionParam, ...]]] = {
    "holdout": ("Holdout for this rule (optional)", HOLDOUT_PARAMS),
    "budget": ("Budget of this rule (optional)", BUDGET_PARAMS),
}
