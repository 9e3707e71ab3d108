"""Recommendations computed from the stream itself.

``next_click`` (``decisions.runtime.next_click``): sequential rules over the session's
clicks mixed with returns to the session's products, by the share of returns the stream
shows. Item co-visitation: products viewed or carted together in a session count for
each other (``d:covis:<product>``). Category and overall top sellers (``d:topcat:<c>``,
``d:top``) and the most viewed products (``d:viewed``) are the fallbacks. Left out:
already-bought products, what is already in the cart, and products the catalog marks out
of stock (``products.in_stock``, re-read every reload interval; the API filters again at
read time, as stock changes faster than recommendations expire).

Per batch, the worker aggregates popularity updates (``PopularityBatch``: one script
call per sorted set touched) and prefetches what the fired recommendation rules will
read (``Recommender.prefetch``: one pipeline), so the cost is a few round trips per batch
rather than several per event. Every key stays single-key, so Redis Cluster works.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from itertools import chain
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
}


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
    other models only when in ``models`` (the worker passes those its active rules use)."""

    def __init__(self, models: frozenset[str] = MODELS) -> None:
        self.increments: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.covisit = "covisit" in models
        self.next_click = "next_click" in models
        self.viewed = "top_viewed" in models
        self.next_clicks = 0  # product clicks after a session's first (next_click)
        self.returns = 0  # those back to a product of the session

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
                inc[keys.TOP][item["product_id"]] += qty
                if isinstance(item.get("category"), str):
                    inc[keys.top_category(item["category"])][item["product_id"]] += qty
        if event.type == "add_to_cart" and isinstance(props.get("category"), str) \
                and isinstance(product, str):
            inc[keys.top_category(props["category"])][product] += 0.1
        if event.type in ("product_view", "click") and isinstance(product, str):
            if self.viewed:
                inc[keys.VIEWED][product] += 1
            if self.next_click:
                back = next_click.learn(inc, product, snapshot.get("session_products", ()))
                if back is not None:
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
            pipe.command("HINCRBY", keys.RETURNS, "next", self.next_clicks)
        if self.returns:
            pipe.command("HINCRBY", keys.RETURNS, "return", self.returns)


def _scored(reply: list[Any]) -> list[tuple[str, float]]:
    """``ZREVRANGE … WITHSCORES`` as (member, score): RESP3 gives pairs, RESP2 a flat list."""
    if reply and isinstance(reply[0], list):
        return [(m.decode(), float(s)) for m, s in reply]
    return [(reply[i].decode(), float(reply[i + 1])) for i in range(0, len(reply), 2)]


def _share(counts: list[Any]) -> float:
    """``HMGET d:returns next return`` as next_click's return share."""
    next_clicks, returns = (float(c) if c else 0.0 for c in counts)
    return next_click.return_share(next_clicks, returns)


class Recommender:
    def __init__(self, client: Any) -> None:
        self.client = client
        self._cache: dict[str, list[Any]] = {}
        self._raw: dict[str, list[Any]] = {}  # prefetched replies not parsed yet
        self._depth: dict[str, int] = {}  # entries requested per cached sorted set
        self._share: float | None = None  # next_click's return share, read once per batch
        self.out_of_stock: frozenset[str] = frozenset()

    def refresh_stock(self, engine: Engine) -> None:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT product_id FROM products WHERE NOT in_stock"))
            self.out_of_stock = frozenset(r.product_id for r in rows)

    # -- batching ----------------------------------------------------------------------
    def prefetch(self, wanted: Iterable[tuple[str, dict[str, Any], str]]) -> None:
        """Read, in one pipeline, every key the given (user, snapshot, strategy) need."""
        bought: set[str] = set()
        ranked: dict[str, int] = {}  # sorted set -> entries to read
        returns = False
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
                ranked.setdefault(keys.VIEWED, PREFETCH)
            if "category_top" in steps:
                for c in list(snapshot.get("recent_categories", []))[:3]:
                    ranked.setdefault(keys.top_category(c), PREFETCH)
            ranked.setdefault(keys.TOP, PREFETCH)
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
            pipe.command("HMGET", keys.RETURNS, "next", "return")
        results = pipe.execute()
        for key, members in zip(todo_bought, results, strict=False):
            self._cache[key] = [m.decode() for m in members]
        at = len(todo_bought)
        for key, rows in zip(todo_ranked, results[at:at + len(todo_ranked)], strict=True):
            self._raw[key] = rows  # parsed when first read (fallbacks are often not)
            self._depth[key] = ranked[key]
        if todo_returns:
            self._share = _share(results[-1])

    def clear(self) -> None:
        self._cache.clear()
        self._raw.clear()
        self._depth.clear()
        self._share = None

    def return_share(self) -> float:
        """next_click's share of clicks going back to a product of the session."""
        if self._share is None:
            self._share = _share(self.client.hmget(keys.RETURNS, "next", "return"))
        return self._share

    def _members(self, key: str) -> list[str]:
        if key not in self._cache:
            self._cache[key] = [m.decode() for m in self.client.smembers(key)]
        return list(self._cache[key])

    def _ranked(self, key: str, n: int) -> list[tuple[str, float]]:
        """The top n + 1 entries of a sorted set (as ``ZREVRANGE key 0 n`` returns)."""
        raw = self._raw.pop(key, None)
        if raw is not None:
            self._cache[key] = _scored(raw)
        if self._depth.get(key, 0) < n + 1:
            depth = max(n + 1, PREFETCH)
            rows = self.client.zrevrange(key, 0, depth - 1, withscores=True)
            self._cache[key] = [(m.decode(), s) for m, s in rows]
            self._depth[key] = depth
        return self._cache[key][: n + 1]

    # -- recommending ------------------------------------------------------------------
    def recommend(self, user_id: str, snapshot: dict[str, Any], strategy: str,
                  count: int) -> tuple[list[str], str]:
        """Products for one user and the strategy that produced them (after fallbacks)."""
        exclude = set(self._members(keys.bought(user_id)))
        exclude.update(snapshot.get("cart_products", []))
        exclude.update(self.out_of_stock)
        chosen: list[str] = []
        used = strategy
        for step in STRATEGIES.get(strategy, ["top_sellers"]):
            found = [p for p in self._products(step, snapshot, count * 3)
                     if p not in exclude and p not in chosen]
            if found and not chosen:
                used = step
            chosen.extend(found[: count - len(chosen)])
            if len(chosen) >= count:
                break
        return chosen, used

    def _products(self, step: str, snapshot: dict[str, Any], n: int) -> list[str]:
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
            return [p for p, _ in self._ranked(keys.VIEWED, n)]
        return [p for p, _ in self._ranked(keys.TOP, n)]
