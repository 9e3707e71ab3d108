"""One batch through the worker: staged (parsed; state scripts and customer reads start on
helper threads), then decided (``decisions.runtime.decide`` per fresh event, actions,
effects to Redis, dead letters and actions to Kafka, archive and decision rows handed to
PostgreSQL), then made durable on the tail thread. ``Worker`` (``loop``) drives the
batches; the bookkeeping of what is staged and in flight is ``checkpoint``'s.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import redis

from decisions.core import metrics
from decisions.core.events import Event, TimeWindow, format_ts
from decisions.core.resp.pipeline import RawPipeline, RawScript
from decisions.core.settings import Settings
from decisions.core.tracing import Tracing, record_parent
from decisions.runtime.actions import Effect
from decisions.runtime.active import Runtime
from decisions.runtime.customers import CustomerCache, queue_fills
from decisions.runtime.decide import NO_SCORES, Decider, Fired
from decisions.runtime.kafka import Partition, Producer
from decisions.runtime.recommend import PopularityBatch, Recommender
from decisions.runtime.state import Applied, StateStore
from decisions.runtime.worker.checkpoint import Checkpoint, InFlight, Phases, Staged, drain
from decisions.runtime.worker.records import parse
from decisions.runtime.worker.sinks import DecisionLog, Effects, Topics, decision_row
from decisions.runtime.worker.stats import Stats
from decisions.runtime.worker.timers import deadlines, queue_deadlines
from decisions.runtime.worker.traces import BatchTrace, Traced


def observe_decided(produced: list[int]) -> None:
    """``decisions_produce_to_decision_seconds``: from each record's Kafka timestamp (when
    it was produced) to its batch's effects stored in Redis (what the API serves)."""
    now_ms = time.time() * 1000
    observe = metrics.PRODUCE_TO_DECISION.observe
    for stamp in produced:
        if stamp > 0:  # -1: a record without a timestamp
            observe(max(0.0, now_ms - stamp) / 1000)


def count_granted(effects: list[Effect]) -> None:
    """``decisions_actions_granted_total``: what was stored for the storefront (not the
    held-out, superseded or refused: those are recorded only)."""
    counts = Counter((e.match.ruleset, e.match.rule, e.kind) for e in effects)
    for (ruleset, rule, kind), n in counts.items():
        metrics.GRANTED.labels(ruleset, rule, kind).inc(n)


STATE_CHUNKS = 4  # state pipelines per batch: Redis runs the next while rules evaluate this
STATE_CHUNK_MIN, STATE_CHUNK_MAX = 16, 100  # events per state pipeline


class BatchSteps:
    """The steps of one batch, for ``Worker`` (which owns and wires what is declared here)."""

    settings: Settings
    redis: redis.Redis
    state: StateStore
    customers: CustomerCache
    recommender: Recommender
    decisions: DecisionLog
    effects: Effects
    runtime: Runtime
    decider: Decider
    stats: Stats
    checkpoint: Checkpoint
    _window: TimeWindow
    _increment: RawScript
    _pg: ThreadPoolExecutor
    _state_pool: ThreadPoolExecutor
    _tail: ThreadPoolExecutor
    _lookup: ThreadPoolExecutor
    _consent_changed: dict[str, bool]
    _producer: Producer | None
    _topics: Topics | None
    tracing: Tracing | None  # None: DECISIONS_TRACING=off

    def _stage(self, records: Sequence[Any]) -> Staged:
        mark = Phases(self.stats.phase_seconds)
        batch = Staged(time.monotonic())
        tracing = self.tracing
        for record in records:
            tp = Partition(record.topic, record.partition)
            batch.offsets[tp] = max(batch.offsets.get(tp, 0), record.offset + 1)
            event, reason, detail = parse(record, self.settings, self._window)
            if event is None:
                batch.dead.append((record, reason, detail))
            else:
                batch.events.append(event)
                # (as ``records.parse``: a record without a timestamp or headers is read)
                batch.produced.append(getattr(record, "timestamp", -1))
                if tracing is not None and getattr(record, "headers", None):
                    self._trace_record(batch, tracing, record, event)
        batch.chunks = self._submit_state(batch.events, batch.trace)
        # customer attributes are read meanwhile too (Redis, PostgreSQL for cache misses)
        batch.customers = self._lookup.submit(self.customers.lookup,
                                              [e.user_id for e in batch.events])
        mark("parse")
        return batch

    @staticmethod
    def _trace_record(batch: Staged, tracing: Tracing, record: Any, event: Event) -> None:
        parent = record_parent(tracing, record.headers)
        if parent is not None:
            if batch.trace is None:
                batch.trace = BatchTrace(tracing)
            batch.trace.add(record, event, parent)

    def _decide(self, batch: Staged) -> None:
        assert self._producer is not None and self._topics is not None
        mark = Phases(self.stats.phase_seconds)
        assert batch.customers is not None
        customers, cache_fills = batch.customers.result()
        # consent changed by the batch decided before this one, maybe after these were read
        changed, self._consent_changed = self._consent_changed, {}
        for user_id, granted in changed.items():
            if user_id in customers:
                customers[user_id] = {**customers[user_id], "consent": granted}
        mark("customers")
        fresh, fired, latest, popularity, by_type = self._evaluate(batch, customers)
        self.decider.report_missing()
        for etype, n in by_type.items():  # one metric update per type, not per event
            metrics.EVENTS.labels(etype).inc(n)
            self.stats.processed += n
        self.stats.scorer_errors = self.decider.score_errors
        pipe = RawPipeline(self.redis)
        popularity.queue(pipe, self._increment)
        queue_fills(pipe, cache_fills)
        queue_deadlines(pipe, deadlines(latest, self.runtime.timers))
        mark("state_rules")

        # actions, once every rule of the batch is known (superseded recommendations are
        # decisions to record, not effects to store)
        effects = []
        decision_rows: list[dict[str, Any]] = []
        by_rule: Counter[tuple[str, str]] = Counter()
        versions = {id(f.match): f.model_versions for f in fired}
        trace, started = batch.trace, time.time_ns()
        made = self.decider.act(fired, self.recommender)
        now_ms = int(time.time() * 1000)
        self.effects.reserve(made, now_ms)  # budgets: refused offers are only recorded
        for effect in made:
            if effect.stored:  # (held-out, superseded and refused ones are only recorded)
                effects.append(effect)
            trace_id = trace.trace_id(effect.event) if trace is not None else None
            if trace_id is not None:  # the offer served names its trace
                effect.payload["trace_id"] = trace_id
            decision_rows.append(decision_row(effect, versions[id(effect.match)], trace_id))
        for f in fired:
            by_rule[(f.match.ruleset, f.match.rule)] += 1
        self.stats.fired += len(fired)
        for (ruleset, rule), n in by_rule.items():
            metrics.DECISIONS.labels(ruleset, rule).inc(n)
        mark("actions")
        if trace is not None:
            trace.step("actions", started)

        # Redis first (what the API reads: visible soonest), then PostgreSQL (archive,
        # decisions) in a helper thread and Kafka (acknowledged by the producer's I/O
        # thread meanwhile), all awaited before anything is marked done or committed. The
        # decision rows go once Redis has said which offers it refused (a cap, an active
        # offer of the rule): those are recorded as refused, never published.
        started = time.time_ns()
        offers = []  # (reply index, effect)
        for effect in effects:  # one recommendation per user and slot (superseded: above)
            if effect.kind == "offer":
                offers.append((len(pipe), effect))
            self.effects.queue(pipe, effect, now_ms)
        replies = pipe.execute()
        if offers:
            self.effects.mark_refused([(replies[i], e) for i, e in offers], now_ms)
            effects = [e for e in effects if not e.refused]
        count_granted(effects)
        write = self.decisions.write if trace is None \
            else trace.timed("archive", self.decisions.write)
        archived = self._pg.submit(write, [a.event for a in fresh], decision_rows)
        mark("redis_write")
        if trace is not None:
            trace.step("effects", started)
        observe_decided(batch.produced)
        started = time.time_ns()
        for record, reason, detail in batch.dead:
            self._topics.dead_letter(record, reason, detail)
            self.stats.dead_lettered += 1
        self._topics.publish(effects, format_ts(datetime.now(UTC)))  # one clock reading
        mark("publish")

        # The rest makes the batch durable: broker acks, the PostgreSQL write, events
        # marked done. It runs on the tail thread while the next batches are processed;
        # the offsets are committed (on this thread, in batch order) once it has finished.
        durable = InFlight(batch.offsets, fresh, len(effects), batch.started,
                           {(e.event.user_id, e.event.event_id) for e in fresh})
        durable.tail = self._tail.submit(self._finish, durable, archived, trace, started)
        self.checkpoint.add(durable)

    def _evaluate(self, batch: Staged, customers: dict[str, dict[str, Any]],
                  ) -> tuple[list[Applied], list[Fired], dict[str, int], PopularityBatch,
                             Counter[str]]:
        """Each fresh event of the batch, in order: dedup, consent, decide."""
        in_batch: set[tuple[str, str]] = set()
        fresh: list[Applied] = []
        fired: list[Fired] = []
        popularity = PopularityBatch(self.runtime.models)
        latest: dict[str, int] = {}  # per user, the newest event time (for the timers)
        by_type: Counter[str] = Counter()
        # events of the batches in flight are not marked done yet: drop their repeats here
        in_flight = self.checkpoint.in_flight_keys()
        active = self.runtime.active
        evaluate = self.decider.evaluate
        trace = batch.trace
        for item in self._state_results(batch.chunks):
            event = item.event
            key = (event.user_id, event.event_id)
            if item.done or key in in_batch or key in in_flight:
                metrics.DUPLICATES.inc()
                self.stats.duplicates += 1
                continue
            in_batch.add(key)
            fresh.append(item)
            customer = customers.get(event.user_id, {})
            if event.type == "consent":
                granted = bool(event.properties.get("granted"))
                self.customers.set_consent(event.user_id, granted)
                customer = {**customer, "consent": granted}
                customers[event.user_id] = customer  # later events of this batch see it
                self._consent_changed[event.user_id] = granted  # and the next batch
            if not item.duplicate:
                popularity.add(event, item.snapshot)
                if event.type != "timer":
                    ts_ms = event.ts_ms
                    if ts_ms > latest.get(event.user_id, 0):
                        latest[event.user_id] = ts_ms
            by_type[event.type] += 1
            traced = trace.events.get(key) if trace is not None else None
            if traced is None:
                fired += evaluate(event, item.snapshot, customer, active).fired
            else:
                fired += self._evaluate_traced(traced, event, item.snapshot, customer)
        return fresh, fired, latest, popularity, by_type

    def _evaluate_traced(self, traced: Traced, event: Event, snapshot: dict[str, Any],
                         customer: dict[str, Any]) -> list[Fired]:
        """``Decider.evaluate`` with the scores and the rules timed apart (their spans)."""
        decider = self.decider
        start = time.time_ns()
        scoring = decider.scorer is not None and decider.uses_scores \
            and customer.get("consent") is not False
        scores = decider.scores(snapshot, customer) if scoring else NO_SCORES
        scored = time.time_ns()
        fired = decider.evaluate(event, snapshot, customer, self.runtime.active,
                                 scores=scores).fired
        if scoring:  # (no span for scores that no rule reads)
            traced.scores = (start, scored)
        traced.rules = (scored, time.time_ns())
        traced.fired = len(fired)
        return fired

    def _finish(self, batch: InFlight, archived: Future[None],
                trace: BatchTrace | None = None, published: int = 0) -> None:
        """The batch's durable half (tail thread): acks, archive, then marked done."""
        assert self._producer is not None
        mark = Phases(self.stats.phase_seconds)
        self._producer.flush()
        mark("publish_ack")
        if trace is not None:
            trace.step("publish", published)
        archived.result()
        mark("archive")
        self.state.mark_done([a.event for a in batch.fresh])
        mark("mark_done")
        if trace is not None:
            trace.emit()

    def _submit_state(self, events: list[Event], trace: BatchTrace | None = None,
                      ) -> list[Future[list[Applied]]]:
        """Apply a batch to user state in chunks, in order, on the state thread: Redis runs
        them while this thread decides the previous batch, and the next chunk while rules
        evaluate this one."""
        size = max(STATE_CHUNK_MIN, min(STATE_CHUNK_MAX, -(-len(events) // STATE_CHUNKS)))
        # only the windowed features rules read, unless a model scores (it reads most)
        scorer = self.decider.scorer
        models = scorer is not None and bool(getattr(scorer, "versions", None))
        self.state.wanted = (self.runtime.wanted_all if models and self.runtime.uses_scores
                             else self.runtime.wanted)
        apply = self.state.apply_batch if trace is None \
            else trace.timed_state(self.state.apply_batch)
        return [self._state_pool.submit(apply, events[i:i + size])
                for i in range(0, len(events), size)]

    @staticmethod
    def _state_results(chunks: list[Future[list[Applied]]]) -> Iterator[Applied]:
        try:
            for chunk in chunks:
                yield from chunk.result()
        finally:
            drain(chunks)
