"""Recommendations computed from the stream itself.

Item co-visitation: products viewed or carted together in a session count for each
other (``d:covis:<product>``); category and overall top sellers (``d:topcat:<c>``,
``d:top``) are the fallbacks. Already-bought products are left out here; out-of-stock
ones are left out by the API at read time against the catalog.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from decisions import keys
from decisions.events import Event

COVISIT_WITH = 5  # the newest products a view is paired with
COVISIT_KEEP = 100  # neighbours kept per product


def update_popularity(pipe: Any, event: Event, snapshot: dict[str, Any]) -> None:
    """Queue co-visitation and top-seller updates for a first-seen event."""
    props = event.properties
    if event.type in ("product_view", "add_to_cart") and isinstance(props.get("product_id"), str):
        product = props["product_id"]
        weight = 2 if event.type == "add_to_cart" else 1
        for other in [p for p in snapshot.get("recent_products", []) if p != product][
            :COVISIT_WITH
        ]:
            pipe.zincrby(keys.covisit(product), weight, other)
            pipe.zincrby(keys.covisit(other), weight, product)
            pipe.zremrangebyrank(keys.covisit(other), 0, -COVISIT_KEEP - 1)
        pipe.zremrangebyrank(keys.covisit(product), 0, -COVISIT_KEEP - 1)
    elif event.type == "purchase":
        for item in props.get("items", []):
            qty = int(item.get("quantity", 1))
            pipe.zincrby(keys.TOP, qty, item["product_id"])
            if isinstance(item.get("category"), str):
                pipe.zincrby(keys.top_category(item["category"]), qty, item["product_id"])
    if event.type == "add_to_cart" and isinstance(props.get("category"), str):
        pipe.zincrby(keys.top_category(props["category"]), 0.1, props["product_id"])


class Recommender:
    def __init__(self, client: Any) -> None:
        self.client = client

    def recommend(
        self, user_id: str, snapshot: dict[str, Any], strategy: str, count: int
    ) -> tuple[list[str], str]:
        """Products for one user and the strategy that produced them (after fallbacks)."""
        exclude = set(self._bought(user_id)) | set(snapshot.get("cart_products", []))
        order = {
            "covisit": ["covisit", "category_top", "top_sellers"],
            "recently_viewed": ["recently_viewed", "top_sellers"],
            "category_top": ["category_top", "top_sellers"],
            "top_sellers": ["top_sellers"],
        }.get(strategy, ["top_sellers"])
        chosen: list[str] = []
        used = strategy
        for step in order:
            found = [
                p
                for p in self._products(step, snapshot, count * 3)
                if p not in exclude and p not in chosen
            ]
            if found and not chosen:
                used = step
            chosen.extend(found[: count - len(chosen)])
            if len(chosen) >= count:
                break
        return chosen, used

    def _bought(self, user_id: str) -> list[str]:
        return [b.decode() for b in self.client.smembers(keys.bought(user_id))]

    def _products(self, step: str, snapshot: dict[str, Any], n: int) -> list[str]:
        if step == "recently_viewed":
            return list(snapshot.get("recent_products", []))[:n]
        if step == "covisit":
            scores: Counter[str] = Counter()
            recent = list(snapshot.get("recent_products", []))[:COVISIT_WITH]
            for product in recent:
                for other, score in self.client.zrevrange(
                    keys.covisit(product), 0, n, withscores=True
                ):
                    scores[other.decode()] += score
            for product in recent:
                scores.pop(product, None)
            return [p for p, _ in scores.most_common(n)]
        if step == "category_top":
            out: list[str] = []
            for category in list(snapshot.get("recent_categories", []))[:3]:
                out += [
                    p.decode() for p in self.client.zrevrange(keys.top_category(category), 0, n)
                ]
            return out
        return [p.decode() for p in self.client.zrevrange(keys.TOP, 0, n)]
