"""Generate ``events.jsonl``, the bundled demo stream (run once; the output is committed).

Each line is an event of the contract with ``offset_s`` instead of ``ts``: the replay
(``decisions.cli.demo_replay``) stamps event times relative to now, so offers are live.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CATALOG = {
    "shoes": [("p-1", 89.0), ("p-2", 129.0), ("p-3", 149.0), ("p-4", 210.0)],
    "bags": [("p-9", 59.0), ("p-10", 180.0), ("p-11", 245.0)],
    "jackets": [("p-17", 99.0), ("p-18", 260.0)],
    "watches": [("p-25", 150.0), ("p-26", 320.0)],
}


def build(seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    out: list[dict] = []
    n = 0

    def add(user: str, offset: int, etype: str, **props: object) -> None:
        nonlocal n
        n += 1
        out.append({"event_id": f"demo-{n:05d}", "type": etype, "user_id": user,
                    "offset_s": offset, "properties": props})

    for i in range(1, 31):
        user = f"demo-{i}"
        t = rng.randint(0, 120)
        add(user, t, "page_view", page="home")
        category = rng.choice(list(CATALOG))
        add(user, t + 5, "page_view", page="category")
        for product, price in rng.sample(CATALOG[category], k=2):
            t += rng.randint(10, 40)
            add(user, t, "product_view", product_id=product, category=category, price=price)
        product, price = rng.choice(CATALOG[category])
        big = i % 3 == 0  # every third shopper fills a cart above $200 near checkout
        quantity = 2 if big and price < 201 else 1
        t += 20
        add(user, t, "add_to_cart", product_id=product, price=price, quantity=quantity,
            category=category)
        if big:
            add(user, t + 30, "page_view", page="checkout")
            if price * quantity <= 200:
                other, other_price = CATALOG["watches"][1]
                add(user, t + 60, "add_to_cart", product_id=other, price=other_price,
                    quantity=1, category="watches")
        if i % 5 == 0:
            add(user, t + 90, "purchase", order_id=f"o-{i}", total=price * quantity,
                items=[{"product_id": product, "price": price, "quantity": quantity}])
    out.sort(key=lambda e: e["offset_s"])
    return out


if __name__ == "__main__":
    path = Path(__file__).with_name("events.jsonl")
    path.write_text("".join(json.dumps(e) + "\n" for e in build()))
    print(f"wrote {path}")
