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
| ``d:pages:{uid}`` | set | the pages the user has visited (which ``d:pg`` keys exist) |
| ``d:pv:{uid}`` | hash | no longer written (until #23: product_id -> time of the last view); expires within 30 days |
| ``d:sx:{uid}`` | zset | event log per product, category and page, lexicographic (scores 0): ``<type>|<p|c|g><len>:<id>|<ts ms, 13 digits>|<event_id>``; at most 3,000 entries (when full: older than 30 days, then the oldest, go); ``d:st`` ``sx_n`` counts them; expires 31+ days after the last day of use (``sx_exp``) |
| ``d:rp:{uid}`` / ``d:rc:{uid}`` | zset | recently viewed products / categories scored by event time |
| ``d:ss:{uid}`` | list | this session's product clicks, newest first, repeats kept (10) |
| ``d:bought:{uid}`` | set | products the user bought |
| ``d:seg:{uid}`` | set | segments added by rules |
| ``d:offers:{uid}`` | hash | offer_id -> offer JSON (see ``decisions.runtime.offers``) |
| ``d:offrule:{uid}`` | hash | rule key -> offer_id of the active offer of that rule; ``<ruleset>/<rule>|times`` -> grant times of the last 30 days (per-user cap) |
| ``d:ever:{uid}`` | hash | ``<ruleset>/<rule>`` -> offers the rule ever granted the user (no expiry: ``max_per_user_ever``) |
| ``d:recs:{uid}`` | hash | slot -> JSON {products, rule, ruleset_version, expires_at, ...} |
| ``d:cust:{uid}`` | string | cached customer attributes JSON |
| ``d:erased:{uid}`` | string | tombstone: erased-at (ms); the state script drops the user's events from before it. Expires after ``DECISIONS_ERASURE_TOMBSTONE_DAYS`` |
| ``d:deadlines:s{dl<n>}`` | zset | ``<uid>|<timer>`` scored by due event time (ms); 16 shards (``deadlines(uid)``: by a hash of the user id), each its own hash tag, so a cluster spreads them; ``d:deadlines`` (one key, before #20) is still read and drained |
| ``d:covis:<product_id>`` | zset | co-visited products with counts |
| ``d:sr:<product_id>`` | zset | products clicked up to 5 clicks after it in a session, weighted 1/distance (sequential rules) |
| ``d:returns:s{rt<n>}`` | hash | ``next``: product clicks after a session's first; ``return``: those back to a product of the session; 16 shards (a batch adds to one: ``returns(uid)`` of its first counted click), summed by the reader |
| ``d:top:s{tp<n>}`` | zset | top sellers (purchased units); 16 shards (``top_seller(product_id)``: by a hash of the product id), so each product is in one shard and the top K overall is the top K of the shards' top K merged |
| ``d:viewed:s{vw<n>}`` | zset | most viewed products (product views and clicks); 16 shards by product id, as the top sellers (``viewed(product_id)``) |
| ``d:topcat:<category>`` | zset | top sellers per category: one key per category, not sharded (docs/scaling.md says why) |
| ``d:top`` / ``d:viewed`` / ``d:returns`` | zset / zset / hash | the single keys of before #20: the worker moves them into their shards when it starts (``recommend.move_single_keys``) |
| ``d:budget:{budget:<ruleset>}`` | hash | budgets of a ruleset and its rules: ``<campaign>|cents`` and ``<campaign>|grants`` reserved (``decisions.runtime.budgets``) |
| ``d:budres:{budget:<ruleset>}`` | zset | offer ids reserved against the ruleset's budgets in the last 8 days, scored by time (ms): a replayed grant is not counted twice |
| ``d:rl:<key prefix>`` | hash | API rate-limit token bucket of one API key |
| ``d:admin:fail:u:<name>`` / ``d:admin:fail:ip:<address>`` | string | failed admin sign-ins per user name / client address |

A user's key is ``d:<name>:{<user_id>}``, or ``d:<name>:{<user_id>}:<suffix>`` for the names
in ``SUFFIXED`` (a new per-user key with a suffix must be added there, or erasure and export
miss it). ``claimants`` tells whose a key is.
"""

from __future__ import annotations

import re
import zlib


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


def offers_ever(user_id: str) -> str:
    return f"d:ever:{tag(user_id)}"


def recs(user_id: str) -> str:
    return f"d:recs:{tag(user_id)}"


def customer(user_id: str) -> str:
    return f"d:cust:{tag(user_id)}"


def segments(user_id: str) -> str:
    return f"d:seg:{tag(user_id)}"


def bought(user_id: str) -> str:
    return f"d:bought:{tag(user_id)}"


def pages(user_id: str) -> str:
    return f"d:pages:{tag(user_id)}"


def session_products(user_id: str) -> str:
    return f"d:ss:{tag(user_id)}"


def scoped_log(user_id: str) -> str:
    return f"d:sx:{tag(user_id)}"


def recent_products(user_id: str) -> str:
    return f"d:rp:{tag(user_id)}"


def recent_categories(user_id: str) -> str:
    return f"d:rc:{tag(user_id)}"


def timeline(user_id: str, event_type: str) -> str:
    return f"d:ts:{tag(user_id)}:{event_type}"


def page_views(user_id: str, page: str) -> str:
    return f"d:pg:{tag(user_id)}:{page}"


# the keys of a user's profile that the state script reads, besides the per-type timelines
# and per-page views (written by decisions/runtime/state.lua, which builds the same names)
PROFILE = (state, cart, recent_products, recent_categories, pages, bought, segments,
           session_products, scoped_log)


def erased(user_id: str) -> str:
    return f"d:erased:{tag(user_id)}"


# per-user key names followed by ``:<suffix>``: event id, event type, page
SUFFIXED = frozenset({"seen", "ts", "pg"})
_NAME = re.compile(r"d:([a-z_]+):")


def user_pattern(user_id: str) -> str:
    """A SCAN pattern for the keys of one user; it also matches other users' keys (ids
    that start with ``user_id}``): keep only those ``claimants`` accepts."""
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in tag(user_id))
    return f"d:*:{escaped}*"


def claimants(key: str, user_id: str) -> list[str] | None:
    """None when ``key`` is not one of ``user_id``'s keys; else the other user ids the very
    same key would also belong to (``[]``: only this user's).

    Ids and suffixes may hold ``}``: ``d:seen:{A}:x}:e`` is user ``A``'s marker of event
    ``x}:e`` and user ``A}:x``'s of event ``e`` alike. The caller decides such a key (the
    store gives it to the other user when that one has state).
    """
    m = _NAME.match(key)
    own = tag(user_id)
    if m is None or not key.startswith(own, m.end()):
        return None
    tail = key[m.end() + len(own):]
    if not tail:
        return []
    if m.group(1) not in SUFFIXED or not tail.startswith(":"):
        return None
    suffix = tail[1:]
    return [f"{user_id}}}:{suffix[:i]}" for i, c in enumerate(suffix)
            if c == "}" and suffix[i + 1:i + 2] == ":"]


DEADLINES = "d:deadlines"  # the one deadlines key before #20: still read, drained
SHARDS = 16  # of the deadlines and of the aggregates below


def _shards(name: str, tag: str) -> tuple[str, ...]:
    # ``s{<tag><n>}``, not ``{<tag><n>}``: no user's key pattern (``user_pattern``) may
    # match a shard. Each name's tags put shards on every node of a 3-node cluster.
    return tuple(f"d:{name}:s{{{tag}{n}}}" for n in range(SHARDS))


def _shard(shards: tuple[str, ...], id_: str) -> str:
    """The shard of ``id_`` (CRC-32 of it): stable across processes and versions."""
    return shards[zlib.crc32(id_.encode(errors="surrogateescape")) % len(shards)]


DEADLINE_KEYS = _shards("deadlines", "dl")
ALL_DEADLINE_KEYS = (*DEADLINE_KEYS, DEADLINES)


def deadlines(user_id: str) -> str:
    """The deadlines shard holding ``user_id``'s timers."""
    return _shard(DEADLINE_KEYS, user_id)


# top sellers, most viewed and next_click's returns (#20): sharded like the deadlines,
# so a cluster spreads their writes; the single keys of before are moved at worker start
TOP = "d:top"
VIEWED = "d:viewed"
RETURNS = "d:returns"
TOP_KEYS = _shards("top", "tp")
VIEWED_KEYS = _shards("viewed", "vw")
RETURNS_KEYS = _shards("returns", "rt")


def top_seller(product_id: str) -> str:
    """The top-sellers shard holding ``product_id``'s units."""
    return _shard(TOP_KEYS, product_id)


def viewed(product_id: str) -> str:
    """The most-viewed shard holding ``product_id``'s views."""
    return _shard(VIEWED_KEYS, product_id)


def returns(user_id: str) -> str:
    """A returns shard (any will do: the reader sums them all)."""
    return _shard(RETURNS_KEYS, user_id)


def top_category(category: str) -> str:
    return f"d:topcat:{category}"


def covisit(product_id: str) -> str:
    return f"d:covis:{product_id}"


def rate_limit(key_prefix: str) -> str:
    return f"d:rl:{key_prefix}"


def admin_failures(username: str | None = None, address: str | None = None) -> str:
    """Failed sign-ins of one user name, or from one client address."""
    if username is not None:
        return f"d:admin:fail:u:{username.lower()[:100]}"
    return f"d:admin:fail:ip:{address}"


def scratch_pattern(prefix: str) -> str:
    """A SCAN pattern for the keys of the scratch users ``<prefix>*`` (backtests)."""
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in prefix)
    return f"d:*{{{escaped}*"

def successors(product_id: str) -> str:
    return f"d:sr:{product_id}"


# -- budgets (#19): one hash tag per ruleset, so its budgets' script stays on one slot ----
def budget_tag(ruleset: str) -> str:
    return "{budget:" + ruleset + "}"


def budget(ruleset: str) -> str:
    """Spent cents and grants per campaign of a ruleset's and its rules' budgets."""
    return f"d:budget:{budget_tag(ruleset)}"


def budget_reservations(ruleset: str) -> str:
    """The offer ids reserved against a ruleset's budgets lately (replays count once)."""
    return f"d:budres:{budget_tag(ruleset)}"
