"""Offline evaluation of a recommendation strategy on a session click log.

What a merchant runs before switching a strategy on: learn from the training clicks in
time order through the worker's own code (the state script, ``PopularityBatch``), then
replay each test session click by click and, after every click but the last, ask the
``Recommender`` for the list the storefront would be served and score it against the
next click: HR@K (the next click is in the list), MRR@K (1/rank), NDCG@K (1/log2(rank + 1))
and catalog coverage (distinct products recommended over products in the training log).

The model is frozen during the replay (the usual protocol: test clicks update the
shopper's own state, not what was learned), so every list only depends on the training
log and the session so far. Two baselines are computed beside it on the same positions,
from the training log directly: popularity (the K most clicked products) and last-item
successors (the products most often clicked right after the current one, ties and the
rest of the list by popularity).
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from decisions.core.events import Event
from decisions.core.resp.pipeline import RawPipeline, RawScript
from decisions.runtime.recommend import INCREMENT, PopularityBatch, Recommender, models_for
from decisions.runtime.state import StateStore
from decisions.simulate.clicklog import Session

CHUNK = 1000  # events per pipeline (the worker's batches are of this order)
TTL = 600  # seconds the replay's dedup markers live (event ids are unique here)

Progress = Callable[[int], None]  # called with the number of clicks done so far


@dataclass
class Scores:
    """Hits, reciprocal ranks and discounted gains summed over the lists scored."""

    name: str
    k: int
    lists: int = 0
    hits: int = 0
    rr: float = 0.0
    gain: float = 0.0
    seen: set[str] = field(default_factory=set)

    def add(self, products: Sequence[str], target: str) -> None:
        top = products[: self.k]
        self.lists += 1
        self.seen.update(top)
        if target in top:
            rank = top.index(target) + 1
            self.hits += 1
            self.rr += 1 / rank
            self.gain += 1 / math.log2(rank + 1)

    def figures(self, catalog: int) -> dict[str, float]:
        n = self.lists or 1
        return {"hr": self.hits / n, "mrr": self.rr / n, "ndcg": self.gain / n,
                "coverage": len(self.seen) / catalog if catalog else 0.0}


def _events(sessions: Iterable[Session], role: str) -> list[tuple[Event, int]]:
    """The clicks as product views of user ``<role>:<session id>``, in time order, each
    with its 0-based position in its session."""
    rows: list[tuple[float, int, Event, int]] = []
    n = 0
    for s in sessions:
        user = f"{role}:{s.session_id}"
        for position, (item, ts) in enumerate(zip(s.items, s.times, strict=True)):
            event = Event(f"{role}-{n}", "product_view", user,
                          datetime.fromtimestamp(ts, UTC), {"product_id": item})
            rows.append((ts, n, event, position))
            n += 1
    rows.sort(key=lambda r: (r[0], r[1]))
    return [(event, position) for _, _, event, position in rows]


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def learn(client: redis.Redis, sessions: Sequence[Session], strategy: str,
          progress: Progress | None = None) -> int:
    """Run the training clicks through the worker's state script and the model updates
    of ``strategy`` (as a worker whose rules use it); returns the clicks learned."""
    store = StateStore(client, dedup_ttl_seconds=TTL)
    models = models_for([strategy])
    script = RawScript(INCREMENT)
    events = [e for e, _ in _events(sessions, "train")]
    done = 0
    for chunk in _chunks(events, CHUNK):
        batch = PopularityBatch(models)
        for applied in store.apply_batch(chunk):
            if not applied.duplicate:
                batch.add(applied.event, applied.snapshot)
        pipe = RawPipeline(client)
        batch.queue(pipe, script)
        pipe.execute()
        done += len(chunk)
        if progress:
            progress(done)
    return done


def replay(client: redis.Redis, sessions: Sequence[Session], strategy: str, k: int,
           on_list: Callable[[Session, int, list[str]], None],
           progress: Progress | None = None) -> float:
    """Replay the test sessions click by click; after each click with a next one, ask the
    recommender for ``k`` products and hand them to ``on_list(session, position, products)``.
    Returns the seconds spent."""
    store = StateStore(client, dedup_ttl_seconds=TTL)
    recommender = Recommender(client)
    by_user = {f"test:{s.session_id}": s for s in sessions}
    events = _events(sessions, "test")
    started = time.perf_counter()
    done = 0
    for chunk in _chunks(events, CHUNK):
        applied = store.apply_batch([e for e, _ in chunk])
        wanted = [(a, position) for a, (_, position) in zip(applied, chunk, strict=True)
                  if position + 1 < len(by_user[a.event.user_id].items)]
        recommender.prefetch((a.event.user_id, a.snapshot, strategy) for a, _ in wanted)
        for a, position in wanted:
            products, _ = recommender.recommend(a.event.user_id, a.snapshot, strategy, k)
            on_list(by_user[a.event.user_id], position, products)
        recommender.clear()
        done += len(chunk)
        if progress:
            progress(done)
    return time.perf_counter() - started


class Baselines:
    """Popularity and last-item successors, counted on the training sessions."""

    def __init__(self, sessions: Iterable[Session]) -> None:
        self.popularity: Counter[str] = Counter()
        self.successors: dict[str, Counter[str]] = defaultdict(Counter)
        for s in sessions:
            self.popularity.update(s.items)
            for a, b in zip(s.items, s.items[1:], strict=False):
                self.successors[a][b] += 1
        # most clicked first; equal counts by product id, so the lists are reproducible
        self.ranked = sorted(self.popularity, key=lambda p: (-self.popularity[p], p))

    def popular(self, k: int) -> list[str]:
        return self.ranked[:k]

    def after(self, item: str, k: int) -> list[str]:
        counts = self.successors.get(item)
        pop = self.popularity
        out = sorted(counts, key=lambda p: (-counts[p], -pop[p], p))[:k] if counts else []
        if len(out) < k:
            chosen = set(out)
            for p in self.ranked:
                if p not in chosen:
                    out.append(p)
                    if len(out) == k:
                        break
        return out
