"""Every Redis key the product uses, in one place.

Keys of one user share the hash tag ``{user_id}`` so multi-key scripts run on Redis
Cluster. Each use has its own prefix.

| key | type | holds |
|---|---|---|
| ``d:seen:{uid}:<event_id>`` | string | dedup marker: JSON feature snapshot, then ``done`` |
| ``d:st:{uid}`` | hash | scalar state: cart_value, cart_items, order_count, lifetime_value, first_ts, last_ts, last_purchase_ts |
| ``d:cart:{uid}`` | hash | product_id -> JSON {price, quantity, category} |
| ``d:ts:{uid}:<type>`` | zset | event ids scored by event time (ms), per event type, for windowed counts |
| ``d:pg:{uid}:<page>`` | zset | page views scored by event time (ms), per page, for "since last <page>" |
| ``d:rp:{uid}`` / ``d:rc:{uid}`` | zset | recently viewed products / categories scored by event time |
| ``d:ss:{uid}`` | list | this session's product clicks, newest first, repeats kept (10) |
| ``d:bought:{uid}`` | set | products the user bought |
| ``d:seg:{uid}`` | set | segments added by rules |
| ``d:offers:{uid}`` | hash | offer_id -> offer JSON (see ``decisions.runtime.offers``) |
| ``d:offrule:{uid}`` | hash | rule key -> offer_id of the active offer of that rule; ``<ruleset>/<rule>|times`` -> grant times of the last 30 days (per-user cap) |
| ``d:recs:{uid}`` | hash | slot -> JSON {products, rule, ruleset_version, expires_at, ...} |
| ``d:cust:{uid}`` | string | cached customer attributes JSON |
| ``d:deadlines`` | zset | ``<uid>|<timer>`` scored by due event time (ms) |
| ``d:covis:<product_id>`` | zset | co-visited products with counts |
| ``d:sr:<product_id>`` | zset | products clicked up to 5 clicks after it in a session, weighted 1/distance (sequential rules) |
| ``d:returns`` | hash | ``next``: product clicks after a session's first; ``return``: those back to a product of the session |
| ``d:top`` / ``d:topcat:<category>`` | zset | top sellers, overall and per category |
| ``d:viewed`` | zset | most viewed products (product views and clicks) |
| ``d:rl:<key prefix>`` | hash | API rate-limit token bucket of one API key |
"""

from __future__ import annotations


def tag(user_id: str) -> str:
    return "{" + user_id + "}"


def seen(user_id: str, event_id: str) -> str:
    return f"d:seen:{tag(user_id)}:{event_id}"


def state(user_id: str) -> str:
    return f"d:st:{tag(user_id)}"


def cart(user_id: str) -> str:
    return f"d:cart:{tag(user_id)}"


def offers(user_id: str) -> str:
    return f"d:offers:{tag(user_id)}"


def offer_rules(user_id: str) -> str:
    return f"d:offrule:{tag(user_id)}"


def recs(user_id: str) -> str:
    return f"d:recs:{tag(user_id)}"


def customer(user_id: str) -> str:
    return f"d:cust:{tag(user_id)}"


def segments(user_id: str) -> str:
    return f"d:seg:{tag(user_id)}"


def bought(user_id: str) -> str:
    return f"d:bought:{tag(user_id)}"


def user_pattern(user_id: str) -> str:
    """A SCAN pattern matching every key of one user (for erasure and export)."""
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in tag(user_id))
    return f"d:*:{escaped}*"


DEADLINES = "d:deadlines"
TOP = "d:top"
RETURNS = "d:returns"
VIEWED = "d:viewed"


def top_category(category: str) -> str:
    return f"d:topcat:{category}"


def covisit(product_id: str) -> str:
    return f"d:covis:{product_id}"


def successors(product_id: str) -> str:
    return f"d:sr:{product_id}"
