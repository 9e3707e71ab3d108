"""Recommendations computed from the stream itself.

``next_click`` (``decisions.runtime.next_click``): sequential rules over the session's
clicks mixed with returns to the session's products, by the share of returns the stream
shows. Item co-visitation: products viewed or carted together in a session count for
each other (``d:covis:<product>``). Category and overall top sellers (``d:topcat:<c>``,
``d:top:s{tp<n>}``) and the most viewed products (``d:viewed:s{vw<n>}``) are the
fallbacks. Left out:
already-bought products, what is already in the cart, and products the catalog marks out
of stock (``products.in_stock``, re-read every reload interval; the API filters again at
read time, as stock changes faster than recommendations expire).

Per batch, the worker aggregates popularity updates (``PopularityBatch``: one script
call per sorted set touched) and prefetches what the fired recommendation rules will
read (``Recommender.prefetch``: one pipeline), so the cost is a few round trips per batch
rather than several per event. Every command and script touches one key, so Redis
Cluster works.

Top sellers, most viewed and the returns counters are sharded (``keys.TOP_KEYS`` ...,
#20): a product's counts live in one shard, chosen by a hash of its id, so a cluster
spreads their writes; a reader takes the top K of every shard (one pipeline) and merges
them (``top_of``), which is exactly the top K of one sorted set of them all. The single
keys of before are moved into the shards when a worker starts (``move_single_keys``).
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, islice
from operator import itemgetter
from typing import Any

from sqlalchemy import Engine, text

from decisions.core import keys
from decisions.core.events import Event
from decisions.core.resp.pipeline import RawPipeline, RawScript
from decisions.runtime import next_click

COVISIT_WITH = 5  # the newest products a view is paired with
COVISIT_PREFIX = keys.covisit("")
COVISIT_KEEP = 100  # neighbours kept per product
PREFETCH = 19  # ranked entries prefetched per key: count * 3 + 1 for the usual count 6
STRATEGIES = {
    "next_click": ["next_click", "top_sellers", "top_viewed"],
    "covisit": ["covisit", "category_top", "top_sellers"],
    "recently_viewed": ["recently_viewed", "top_sellers"],
    "category_top": ["category_top", "top_sellers"],
    "top_sellers": ["top_sellers"],
    "top_viewed": ["top_viewed", "top_sellers"],
    # aimed by the rule (#23): its product list; the reference product's category
    "product_list": ["product_list", "top_sellers"],
    "similar": ["similar", "category_top", "top_sellers"],
}
# steps whose products are the whole answer when they find any (a marketer's list is not
# padded with best sellers; the fallback answers only when none of it is left)
WHOLE = frozenset({"product_list"})
SIMILAR_PRICE = 0.2  # "similar price": within 20 % of the reference price


@dataclass(frozen=True)
class Aim:
    """Where a rule aims its recommendation (the recommend action's parameters, with the
    event's product, category and price filled in)."""

    category: str = ""  # category_top / similar: this category (else recent categories)
    products: tuple[str, ...] = ()  # product_list: these products, in this order
    price: str = ""  # "cheaper" / "similar" than ``reference``'s price ("" : any)
    reference: str = ""  # the product prices compare with (the event's)
    reference_price: float | None = None  # its price (the event's, else the catalog's)


@dataclass(frozen=True)
class Answer:
    """What a recommendation holds: the products, the strategy that answered first
    (``strategy``), every step that filled the list, and whether the requested strategy
    itself found nothing (``fallback``)."""

    products: list[str]
    requested: str
    strategy: str
    filled_by: tuple[str, ...]

    @property
    def fallback(self) -> bool:
        return self.strategy != self.requested


# KEYS[1]: a sorted set. ARGV: keep (0: no trim), then member, increment pairs.
INCREMENT = """
for i = 2, #ARGV, 2 do redis.call('ZINCRBY', KEYS[1], ARGV[i + 1], ARGV[i]) end
local keep = tonumber(ARGV[1])
if keep > 0 and redis.call('ZCARD', KEYS[1]) > keep then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -keep - 1)
end
return 0
"""


# what the strategies learn from the stream beyond top sellers (always counted: every
# chain ends with them)
MODELS = frozenset({"covisit", "next_click", "top_viewed"})


def models_for(strategies: Iterable[str]) -> frozenset[str]:
    """The models the given strategies read, their fallbacks included."""
    return MODELS.intersection(
        step for strategy in strategies for step in STRATEGIES.get(strategy, ()))


class PopularityBatch:
    """The model increments of one batch, summed per key, then written with one script
    call per key (single-key: fine on Redis Cluster). Top sellers are always counted; the
    other models only when in ``models`` (the worker passes those its active rules use).
    The returns counters of a batch go to one shard, that of its first counted click's user."""

    def __init__(self, models: frozenset[str] = MODELS) -> None:
        self.increments: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.covisit = "covisit" in models
        self.next_click = "next_click" in models
        self.viewed = "top_viewed" in models
        self.next_clicks = 0  # product clicks after a session's first (next_click)
        self.returns = 0  # those back to a product of the session
        self.returns_key = ""  # the shard they are added to

    def add(self, event: Event, snapshot: dict[str, Any]) -> None:
        props = event.properties
        product = props.get("product_id")
        inc = self.increments
        if self.covisit and event.type in ("product_view", "add_to_cart") \
                and isinstance(product, str):
            weight = 2 if event.type == "add_to_cart" else 1
            mine = inc[COVISIT_PREFIX + product]  # keys.covisit, inlined
            paired = 0
            for other in snapshot.get("recent_products", ()):  # the newest COVISIT_WITH
                if other == product:
                    continue
                mine[other] += weight
                inc[COVISIT_PREFIX + other][product] += weight
                paired += 1
                if paired == COVISIT_WITH:
                    break
        elif event.type == "purchase":
            for item in props.get("items", []):
                qty = int(item.get("quantity", 1))
                inc[keys.top_seller(item["product_id"])][item["product_id"]] += qty
                if isinstance(item.get("category"), str):
                    inc[keys.top_category(item["category"])][item["product_id"]] += qty
        if event.type == "add_to_cart" and isinstance(props.get("category"), str) \
                and isinstance(product, str):
            inc[keys.top_category(props["category"])][product] += 0.1
        if event.type in ("product_view", "click") and isinstance(product, str):
            if self.viewed:
                inc[keys.viewed(product)][product] += 1
            if self.next_click:
                back = next_click.learn(inc, product, snapshot.get("session_products", ()))
                if back is not None:
                    if not self.returns_key:
                        self.returns_key = keys.returns(event.user_id)
                    self.next_clicks += 1
                    self.returns += back

    def queue(self, pipe: RawPipeline, script: RawScript) -> None:
        """``script``: ``RawScript(INCREMENT)``."""
        for key, members in self.increments.items():
            if not members:
                continue
            # co-visitation and sequential-rule sets keep their best; top sellers are
            # bounded by the catalog
            keep = COVISIT_KEEP if key.startswith(COVISIT_PREFIX) \
                else next_click.KEEP if key.startswith(next_click.PREFIX) else 0
            args: list[Any] = [keep]
            args.extend(chain.from_iterable(members.items()))  # member, amount, ...
            pipe.script(script, (key,), args)
        if self.next_clicks:
            pipe.command("HINCRBY", self.returns_key, "next", self.next_clicks)
        if self.returns:
            pipe.command("HINCRBY", self.returns_key, "return", self.returns)


def _scored(reply: list[Any]) -> list[tuple[str, float]]:
    """``ZREVRANGE … WITHSCORES`` as (member, score): RESP3 gives pairs, RESP2 a flat list."""
    if reply and isinstance(reply[0], list):
        return [(m.decode(), float(s)) for m, s in reply]
    return [(reply[i].decode(), float(reply[i + 1])) for i in range(0, len(reply), 2)]


def top_of(replies: Iterable[list[Any]], n: int) -> list[tuple[str, float]]:
    """The top ``n`` of the shards' ``ZREVRANGE 0 n-1 WITHSCORES`` replies, in the order one
    sorted set holding them all would rank them (score, then member, descending): each
    member is in one shard, so a shard's top ``n`` holds every member of it in the top ``n``.

    Each reply is in that order already (members compare as bytes, as Redis compares
    them): a lazy merge reads and decodes about ``n`` entries, not every shard's ``n``.
    """
    merged = heapq.merge(*(_pairs(reply) for reply in replies), reverse=True)
    return [(member.decode(), score) for score, member in islice(merged, n)]


def _pairs(reply: list[Any]) -> Iterator[tuple[float, bytes]]:
    """``ZREVRANGE … WITHSCORES`` as (score, member), lazily (RESP3 pairs or RESP2 flat)."""
    if reply and isinstance(reply[0], list):
        for member, score in reply:
            yield float(score), member
    else:
        for i in range(0, len(reply), 2):
            yield float(reply[i + 1]), reply[i]


def _best(rows: Iterable[tuple[str, float]], n: int) -> list[tuple[str, float]]:
    return sorted(rows, key=itemgetter(1, 0), reverse=True)[:n]


def _share(replies: Iterable[list[Any]]) -> float:
    """The shards' ``HMGET d:returns:s{rt<n>} next return``, summed, as next_click's
    return share."""
    next_clicks = returns = 0.0
    for n, r in replies:
        next_clicks += float(n) if n else 0.0
        returns += float(r) if r else 0.0
    return next_click.return_share(next_clicks, returns)


def _read_returns(pipe: RawPipeline) -> None:
    for key in keys.RETURNS_KEYS:
        pipe.command("HMGET", key, "next", "return")


# KEYS[1]: a hash. Its fields and values, the hash deleted (in one step)
TAKE_HASH = """
local fields = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return fields
"""
MOVE_CHUNK = 1000  # products taken from a single key at a time


def move_single_keys(client: Any) -> int:
    """Move the counts of the single keys of before #20 (``d:top``, ``d:viewed``,
    ``d:returns``) into their shards; returns the products (and counters) moved.

    The worker calls it when it starts. Each chunk is taken from the old key in one step
    (``ZPOPMAX``, a script for the hash), then added to the shards: workers starting
    together never move a count twice; one killed between the two steps loses that chunk's
    counts (at most ``MOVE_CHUNK`` products, once)."""
    moved = 0
    for old, shard in ((keys.TOP, keys.top_seller), (keys.VIEWED, keys.viewed)):
        while rows := client.zpopmax(old, MOVE_CHUNK):
            pipe = RawPipeline(client)
            for member, score in rows:
                pipe.command("ZINCRBY", shard(member.decode(errors="surrogateescape")),
                             score, member)
            pipe.execute()
            moved += len(rows)
    counts = client.eval(TAKE_HASH, 1, keys.RETURNS)
    if counts:
        pipe = RawPipeline(client)
        for field, value in zip(counts[::2], counts[1::2], strict=True):
            pipe.command("HINCRBY", keys.RETURNS_KEYS[0], field, int(value))
        pipe.execute()
        moved += len(counts) // 2
    return moved


Ranked = str | tuple[str, ...]  # a sorted set, or the shards of a sharded one


class Recommender:
    def __init__(self, client: Any) -> None:
        self.client = client
        self._cache: dict[Ranked, list[Any]] = {}
        self._raw: dict[str, list[Any]] = {}  # prefetched replies not parsed yet
        self._depth: dict[Ranked, int] = {}  # entries requested per cached sorted set
        self._share: float | None = None  # next_click's return share, read once per batch
        self.out_of_stock: frozenset[str] = frozenset()
        # the catalog's prices and categories, for aimed recommendations (#23)
        self.prices: dict[str, float] = {}
        self.categories: dict[str, str] = {}
        self.by_category: dict[str, list[str]] = {}

    def refresh_stock(self, engine: Engine) -> None:
        """Re-read the catalog: stock, prices and categories (every reload interval)."""
        with engine.connect() as conn:
            rows = list(conn.execute(text(
                "SELECT product_id, price, category, in_stock FROM products")))
        self.out_of_stock = frozenset(r.product_id for r in rows if not r.in_stock)
        self.prices = {r.product_id: float(r.price) for r in rows if r.price is not None}
        self.categories = {r.product_id: r.category for r in rows if r.category}
        by_category: dict[str, list[str]] = {}
        for r in sorted(rows, key=lambda r: r.product_id):
            if r.category:
                by_category.setdefault(r.category, []).append(r.product_id)
        self.by_category = by_category

    # -- batching ----------------------------------------------------------------------
    def prefetch(self, wanted: Iterable[tuple[str, dict[str, Any], str]]) -> None:
        """Read, in one pipeline, every key the given (user, snapshot, strategy) need."""
        bought: set[str] = set()
        ranked: dict[str, int] = {}  # sorted set -> entries to read
        returns = viewed = False
        for user_id, snapshot, strategy in wanted:
            bought.add(keys.bought(user_id))
            steps = STRATEGIES.get(strategy, ["top_sellers"])
            if "next_click" in steps:
                returns = True
                for p in list(snapshot.get("session_products", []))[:next_click.WINDOW]:
                    ranked[next_click.PREFIX + p] = next_click.READ
            if "covisit" in steps:
                for p in list(snapshot.get("recent_products", []))[:COVISIT_WITH]:
                    ranked.setdefault(keys.covisit(p), PREFETCH)
            if "top_viewed" in steps:
                viewed = True
            if "category_top" in steps:
                for c in list(snapshot.get("recent_categories", []))[:3]:
                    ranked.setdefault(keys.top_category(c), PREFETCH)
        if bought:  # every strategy falls back to top sellers
            for key in chain(keys.TOP_KEYS, keys.VIEWED_KEYS if viewed else ()):
                ranked.setdefault(key, PREFETCH)
        todo_bought = sorted(bought - self._cache.keys())
        todo_ranked = sorted(ranked.keys() - self._cache.keys() - self._raw.keys())
        todo_returns = returns and self._share is None
        if not todo_bought and not todo_ranked and not todo_returns:
            return
        pipe = RawPipeline(self.client)
        for key in todo_bought:
            pipe.command("SMEMBERS", key)
        for key in todo_ranked:
            pipe.command("ZREVRANGE", key, 0, ranked[key] - 1, "WITHSCORES")
        if todo_returns:
            _read_returns(pipe)
        results = pipe.execute()
        for key, members in zip(todo_bought, results, strict=False):
            self._cache[key] = [m.decode() for m in members]
        at = len(todo_bought)
        for key, rows in zip(todo_ranked, results[at:at + len(todo_ranked)], strict=True):
            self._raw[key] = rows  # parsed when first read (fallbacks are often not)
            self._depth[key] = ranked[key]
        if todo_returns:
            self._share = _share(results[-len(keys.RETURNS_KEYS):])

    def clear(self) -> None:
        self._cache.clear()
        self._raw.clear()
        self._depth.clear()
        self._share = None

    def return_share(self) -> float:
        """next_click's share of clicks going back to a product of the session."""
        if self._share is None:
            pipe = RawPipeline(self.client)
            _read_returns(pipe)
            self._share = _share(pipe.execute())
        return self._share

    def _members(self, key: str) -> list[str]:
        if key not in self._cache:
            self._cache[key] = [m.decode() for m in self.client.smembers(key)]
        return list(self._cache[key])

    def _ranked(self, key: Ranked, n: int) -> list[tuple[str, float]]:
        """The top n + 1 entries of a sorted set (as ``ZREVRANGE key 0 n`` returns), or of
        the union of a sharded one's shards."""
        if isinstance(key, tuple):
            return self._merged(key, n)
        raw = self._raw.pop(key, None)
        if raw is not None:
            self._cache[key] = _scored(raw)
        if self._depth.get(key, 0) < n + 1:
            depth = max(n + 1, PREFETCH)
            rows = self.client.zrevrange(key, 0, depth - 1, withscores=True)
            self._cache[key] = [(m.decode(), s) for m, s in rows]
            self._depth[key] = depth
        return self._cache[key][: n + 1]

    def _merged(self, shards: tuple[str, ...], n: int) -> list[tuple[str, float]]:
        if self._depth.get(shards, 0) < n + 1:
            depth = max(n + 1, PREFETCH)
            short = [k for k in shards if self._depth.get(k, 0) < depth]
            if short:  # not prefetched (deep enough): one pipeline
                pipe = RawPipeline(self.client)
                for key in short:
                    pipe.command("ZREVRANGE", key, 0, depth - 1, "WITHSCORES")
                for key, rows in zip(short, pipe.execute(), strict=True):
                    self._raw[key] = rows
                    self._depth[key] = depth
            self._cache[shards] = _best(
                chain.from_iterable(self._ranked(k, depth - 1) for k in shards), depth)
            self._depth[shards] = depth
        return self._cache[shards][: n + 1]

    # -- recommending ------------------------------------------------------------------
    def recommend(self, user_id: str, snapshot: dict[str, Any], strategy: str,
                  count: int) -> tuple[list[str], str]:
        """Products for one user and the strategy that produced them (after fallbacks)."""
        answer = self.answer(user_id, snapshot, strategy, count)
        return answer.products, answer.strategy

    def answer(self, user_id: str, snapshot: dict[str, Any], strategy: str, count: int,
               aim: Aim | None = None) -> Answer:
        """Products for one user, aimed by the rule (``aim``), and which steps answered.

        Never what the user bought, has in the cart, or what is out of stock; with a
        price aim, never a product of unknown or other price (fallbacks included)."""
        aim = aim or Aim()
        exclude = set(self._members(keys.bought(user_id)))
        exclude.update(snapshot.get("cart_products", []))
        exclude.update(self.out_of_stock)
        if aim.reference and (aim.price or strategy == "similar"):
            exclude.add(aim.reference)  # an alternative to it, never itself
        allowed = self._price_filter(aim)
        chosen: list[str] = []
        filled: list[str] = []
        for step in STRATEGIES.get(strategy, ["top_sellers"]):
            found = [p for p in self._products(step, snapshot, count * 3, aim)
                     if p not in exclude and p not in chosen and (allowed is None or allowed(p))]
            found = list(dict.fromkeys(found))
            if found:
                filled.append(step)
            chosen.extend(found[: count - len(chosen)])
            if len(chosen) >= count or (found and step in WHOLE):
                break
        return Answer(chosen, strategy, filled[0] if filled else strategy, tuple(filled))

    def _price_filter(self, aim: Aim) -> Any:
        ref = aim.reference_price
        if ref is None and aim.reference:
            ref = self.prices.get(aim.reference)
        if not aim.price:
            return None
        if ref is None:  # nothing to compare with: nothing qualifies
            return lambda product: False
        prices = self.prices
        if aim.price == "cheaper":
            return lambda product: prices.get(product, ref) < ref
        low, high = ref * (1 - SIMILAR_PRICE), ref * (1 + SIMILAR_PRICE)
        return lambda product: product in prices and low <= prices[product] <= high

    def _products(self, step: str, snapshot: dict[str, Any], n: int,
                  aim: Aim | None = None) -> list[str]:
        aim = aim or Aim()
        if step == "product_list":
            return list(aim.products)
        if step == "similar":
            # the category's catalog products: its top sellers first, then the rest by
            # closeness in price to the reference
            category = aim.category or self.categories.get(aim.reference, "")
            if not category:
                return []
            top = [p for p, _ in self._ranked(keys.top_category(category), n)]
            ref = aim.reference_price or self.prices.get(aim.reference)
            rest = self.by_category.get(category, [])
            if ref is not None:
                rest = sorted(rest, key=lambda p: abs(self.prices.get(p, 0.0) - ref))
            return top + rest
        if step == "category_top" and aim.category:
            return [p for p, _ in self._ranked(keys.top_category(aim.category), n)]
        if step == "next_click":
            return next_click.rank(list(snapshot.get("session_products", [])),
                                   self.return_share(), self._ranked, n)
        if step == "recently_viewed":
            return list(snapshot.get("recent_products", []))[:n]
        if step == "covisit":
            scores: dict[str, float] = {}
            add = scores.get
            recent = list(snapshot.get("recent_products", []))[:COVISIT_WITH]
            for product in recent:
                for other, score in self._ranked(COVISIT_PREFIX + product, n):
                    scores[other] = add(other, 0.0) + score
            for product in recent:
                scores.pop(product, None)
            # what heapq.nlargest returns (same order, ties included), in C for a few dozen
            best = sorted(scores.items(), key=itemgetter(1), reverse=True)[:n]
            return [p for p, _ in best]
        if step == "category_top":
            out: list[str] = []
            for category in list(snapshot.get("recent_categories", []))[:3]:
                out += [p for p, _ in self._ranked(keys.top_category(category), n)]
            return out
        if step == "top_viewed":
            return [p for p, _ in self._ranked(keys.VIEWED_KEYS, n)]
        return [p for p, _ in self._ranked(keys.TOP_KEYS, n)]
