"""A generated storefront event stream whose purchase and lapse behaviour is known exactly.

Used by the tests (a small history to train on) and by ``benchmarks/ml_synthetic.py``
(does the model recover the truth?). Each user has a visit rate and a buying affinity;
a session is a walk home → product views (some added to the cart) → cart → checkout,
then a purchase with probability

    p = sigmoid(BIAS + W_ADDS·adds + W_VIEWS·log1p(views) + W_CHECKOUT·checkout
                + W_BUYER·bought_before + affinity)

drawn when the session's browsing is over. :class:`Truth` keeps ``p`` for the last event
of each session (its true purchase-intent probability) and each user's true daily
purchase rate (whence the true probability of no purchase in the next N days).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from decisions.core.events import Event

BIAS, W_ADDS, W_VIEWS, W_CHECKOUT, W_BUYER = -4.0, 0.9, 0.6, 1.6, 0.7
CATEGORIES = ("shoes", "shirts", "bags", "hats", "watches")


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


@dataclass
class Truth:
    session_p: dict[str, float] = field(default_factory=dict)  # last event id -> p(purchase)
    daily_rate: dict[str, float] = field(default_factory=dict)  # user -> purchases per day

    def p_no_purchase(self, user_id: str, days: float) -> float:
        return math.exp(-self.daily_rate.get(user_id, 0.0) * days)


@dataclass
class _Session:
    events: list[tuple[float, str, dict[str, object]]]
    p: float
    bought: bool


def _session(rng: random.Random, affinity: float, buyer: bool, price_level: float) -> _Session:
    t = 0.0
    out: list[tuple[float, str, dict[str, object]]] = [(t, "page_view", {"page": "home"})]
    views = adds = 0
    checkout = False
    n_views = 1 + int(rng.expovariate(1 / (2.5 + 1.5 * max(affinity, -1.0))))
    for _ in range(min(n_views, 25)):
        t += rng.uniform(5, 120)
        product = f"p-{rng.randrange(200)}"
        category = CATEGORIES[int(product[2:]) % len(CATEGORIES)]
        price = round(price_level * rng.uniform(10, 120), 2)
        out.append((t, "product_view", {"product_id": product, "category": category,
                                        "price": price}))
        views += 1
        if rng.random() < sigmoid(-1.2 + 0.8 * affinity):
            t += rng.uniform(3, 40)
            out.append((t, "add_to_cart", {"product_id": product, "price": price,
                                           "quantity": 1, "category": category}))
            adds += 1
        if rng.random() < 0.15:
            t += rng.uniform(3, 30)
            out.append((t, "search", {"query": category}))
    if adds and rng.random() < 0.75:
        t += rng.uniform(5, 60)
        out.append((t, "page_view", {"page": "cart"}))
        if rng.random() < sigmoid(-0.2 + 0.9 * affinity):
            t += rng.uniform(5, 60)
            out.append((t, "page_view", {"page": "checkout"}))
            checkout = True
    p = sigmoid(BIAS + W_ADDS * adds + W_VIEWS * math.log1p(views) + W_CHECKOUT * checkout
                + W_BUYER * buyer + affinity)
    bought = rng.random() < p
    if bought:
        t += rng.uniform(10, 90)
        total = round(price_level * 60 * max(adds, 1), 2)
        out.append((t, "purchase", {"order_id": "", "total": total, "items": []}))
    return _Session(out, p, bought)


def generate(
    users: int = 200, days: float = 30.0, seed: int = 0,
    start: datetime | None = None,
) -> tuple[list[Event], Truth]:
    """Events of ``users`` over ``days`` days, sorted by event time, and the truth."""
    rng = random.Random(seed)
    begin = start or datetime(2026, 9, 1, tzinfo=UTC)
    truth = Truth()
    raw: list[tuple[float, str, str, dict[str, object]]] = []
    counter = 0
    for u in range(users):
        uid = f"u-{seed}-{u}"
        visits_per_day = rng.lognormvariate(math.log(0.35), 0.8)
        affinity = rng.gauss(0.0, 1.0)
        price_level = rng.lognormvariate(0.0, 0.4)
        # the true purchase rate: visits per day times the mean purchase probability
        sims = [_session(random.Random(rng.random()), affinity, True, price_level).p
                for _ in range(40)]
        truth.daily_rate[uid] = visits_per_day * sum(sims) / len(sims)
        t = rng.uniform(0, 1 / visits_per_day) * 86400
        buyer = False
        while t < days * 86400:
            session = _session(rng, affinity, buyer, price_level)
            last_id = ""
            for offset, etype, props in session.events:
                counter += 1
                eid = f"e-{seed}-{counter}"
                if etype == "purchase":
                    props = {**props, "order_id": f"o-{counter}"}
                else:
                    last_id = eid
                raw.append((t + offset, eid, uid, {"type": etype, **props}))
            truth.session_p[last_id] = session.p
            buyer = buyer or session.bought
            t += session.events[-1][0] + rng.expovariate(visits_per_day) * 86400 + 1800
    raw.sort(key=lambda r: (r[0], r[1]))
    events = []
    for seconds, eid, uid, props in raw:
        etype = str(props.pop("type"))
        ts = begin + timedelta(seconds=seconds)
        events.append(Event(eid, etype, uid, ts, props))
    return events, truth
