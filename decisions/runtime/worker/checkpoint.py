"""Where the stream stands: the batch staged, the batches in flight, the offsets committed.

A polled batch is *staged* (its state scripts run in Redis) and decided on the next round;
a decided batch is *in flight* while its durable half (broker acks, PostgreSQL, marked
done) runs on the tail thread; once that finished, the batch is *settled*: its offsets are
committed, in batch order, on the consuming thread. A failure anywhere before that leaves
the batch (and every later one) uncommitted: the worker abandons them and replays from the
committed offsets, and deterministic action ids make the replay write the same effects.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from decisions.core import metrics
from decisions.core.events import Event
from decisions.runtime.kafka import Consumer, Partition
from decisions.runtime.state import Applied
from decisions.runtime.worker.stats import Stats
from decisions.runtime.worker.traces import BatchTrace

MAX_TAILS = 2  # durable halves in flight at once; one more waits for the oldest


@dataclass
class Staged:
    """A polled batch whose state scripts are running; decided on the next round."""

    started: float
    offsets: dict[Partition, int] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    dead: list[tuple[Any, str, str]] = field(default_factory=list)
    chunks: list[Future[list[Applied]]] = field(default_factory=list)
    # customer attributes, and cache entries to write with the batch (CustomerCache.lookup)
    customers: Future[tuple[dict[str, dict[str, Any]], list[tuple[str, bytes]]]] | None = None
    produced: list[int] = field(default_factory=list)  # each event's record timestamp (ms)
    trace: BatchTrace | None = None  # tracing on, and a traced event in the batch


@dataclass
class InFlight:
    """A batch whose effects are being made durable; its offsets wait for that."""

    offsets: dict[Partition, int]
    fresh: list[Applied]
    effects: int
    started: float
    keys: set[tuple[str, str]]
    tail: Future[None] | None = None


class Phases:
    """Times the steps of a batch: ``decisions_batch_phase_seconds{phase}`` and Stats."""

    def __init__(self, totals: dict[str, float]) -> None:
        self.totals = totals
        self.last = time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        spent = now - self.last
        self.last = now
        self.totals[phase] = self.totals.get(phase, 0.0) + spent
        metrics.PHASE_SECONDS.labels(phase).observe(spent)


class Checkpoint:
    def __init__(self, stats: Stats) -> None:
        self.consumer: Consumer | None = None  # set once the worker has started
        self.staged: Staged | None = None
        self.inflight: deque[InFlight] = deque()  # oldest first; committed in that order
        # per partition, the offset up to which effects are durable (committed or not)
        self.durable: dict[Partition, int] = {}
        self.stats = stats

    def in_flight_keys(self) -> set[tuple[str, str]] | frozenset[tuple[str, str]]:
        """(user, event id) of the batches in flight: not marked done yet."""
        if len(self.inflight) == 1:
            return self.inflight[0].keys
        return set().union(*(b.keys for b in self.inflight))

    def held(self) -> int:
        return (len(self.staged.events) if self.staged else 0) + sum(
            len(b.fresh) for b in self.inflight)

    def add(self, batch: InFlight) -> None:
        """A decided batch; waits for the oldest tail when ``MAX_TAILS`` are running."""
        self.inflight.append(batch)
        self.settle_ready()
        if len(self.inflight) > MAX_TAILS:
            self._settle(len(self.inflight) - MAX_TAILS)

    def _settle(self, count: int, *, wait: bool = False) -> None:
        """Wait for the durable halves of the ``count`` oldest batches in flight, then
        commit their offsets (their effects are stored). The commit is asynchronous
        unless ``wait`` (stopping, or after a rebalance)."""
        assert self.consumer is not None
        mark = Phases(self.stats.phase_seconds)
        settled: list[InFlight] = []
        offsets: dict[Partition, int] = {}
        for _ in range(count):
            batch = self.inflight[0]
            assert batch.tail is not None
            batch.tail.result()  # a failure leaves it (and the later ones) uncommitted
            self.inflight.popleft()
            settled.append(batch)
            for tp, off in batch.offsets.items():
                offsets[tp] = max(offsets.get(tp, 0), off)
                self.durable[tp] = max(self.durable.get(tp, 0), off)
        mark("tail_wait")
        if wait:
            self.commit_durable()
        elif offsets:
            owned = self.consumer.assignment()
            offsets = {tp: off for tp, off in offsets.items() if tp in owned}
            if offsets:
                self.consumer.commit_async(offsets)
        mark("commit")
        done_at = time.time()
        observe = metrics.LATENCY.observe
        for batch in settled:
            self.stats.batches += 1
            self.stats.effects += batch.effects
            for item in batch.fresh:
                observe(max(0.0, done_at - item.event.ts_ms / 1000))
            metrics.BATCH_SECONDS.observe(time.monotonic() - batch.started)

    def settle_ready(self) -> None:
        """Commit the oldest batches whose durable halves have finished (no waiting)."""
        ready = 0
        for batch in self.inflight:
            if batch.tail is None or not batch.tail.done():
                break
            ready += 1
        if ready:
            self._settle(ready)

    def settle(self, *, wait: bool = False) -> None:
        """Commit every batch in flight (idle, stopping, partitions revoked); with
        ``wait``, synchronously, and every durable offset still ours."""
        if self.inflight:
            self._settle(len(self.inflight), wait=wait)
        elif wait:
            self.commit_durable()

    def commit_durable(self) -> None:
        """Commit, synchronously, every durable offset of the partitions still ours (an
        asynchronous commit may have failed; after a rebalance the rest moved away)."""
        assert self.consumer is not None
        owned = self.consumer.assignment()
        self.durable = {tp: off for tp, off in self.durable.items() if tp in owned}
        if self.durable:
            self.consumer.commit(dict(self.durable))

    def abandon(self) -> None:
        """After a failure: forget the batches staged and in flight without committing
        (they are replayed from the committed offsets), once their threads have stopped
        touching anything."""
        staged, self.staged = self.staged, None
        if staged is not None:
            drain(staged.chunks)
            if staged.customers is not None:
                staged.customers.exception()
        while self.inflight:
            batch = self.inflight.popleft()
            if batch.tail is not None:
                batch.tail.exception()


def drain(chunks: list[Future[list[Applied]]]) -> None:
    """After a failure: let the rest of a batch's state chunks finish before a retry."""
    for chunk in chunks:
        if not chunk.cancel():
            chunk.exception()
