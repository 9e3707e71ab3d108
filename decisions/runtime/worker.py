"""The stream worker: Kafka events to decisions, effectively once.

Per batch, in order: validate (bad records to the dead-letter topic with the reason and
the original bytes) → apply to user state in Redis (dedup by event id) → enrich with
customer attributes → model scores → evaluate every active ruleset → store effects
(offers, recommendations, segments) in Redis → publish them to the actions topic →
archive events and decisions in PostgreSQL → mark events done → commit offsets. Of the
recommendations of one user and slot in a batch only the last is computed, stored and
published (the slot holds the latest); the earlier ones are logged as superseded by it.

Batches overlap, each in a different stage: while batch N is decided on this thread
(rules, actions, Redis writes, records handed to the producer), the state scripts of
batch N+1 run in Redis (state thread) and its customers are read (customers thread), and
batches N-1 and N-2 are made durable (tail thread, in order: broker acks, PostgreSQL,
marked done). Offsets are committed on this thread, in batch order, and only for a batch
whose durable half has finished; a crash anywhere before that
replays the batch, and deterministic action ids make the replay write the same effects
again instead of new ones. When Redis, PostgreSQL or the broker fails, every batch not
committed is replayed with backoff from the committed offsets. Consequence of the
overlap: a segment added by batch N's actions is in the snapshots of batch N+2 on, not
N+1 (within a batch it was never visible either). A ruleset reload waits until nothing
is staged, so every snapshot is computed for the rules that evaluate it.

Backpressure: a poll returns at most ``batch_size`` records and the fetcher buffers at
most ``worker_fetch_max_bytes`` ahead; with a batch staged and ``MAX_TAILS`` in their
tails, the consuming thread waits for the oldest tail before it polls again, so a slow
dependency slows consumption instead of growing memory. ``Stats.max_in_flight`` records
the bound held ((2 + ``MAX_TAILS``) × ``batch_size``).
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import redis
from kafka.errors import KafkaError
from kafka.structs import TopicPartition
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from decisions.core import keys, metrics
from decisions.core.db import make_engine
from decisions.core.errors import ServiceUnavailable, ValidationError
from decisions.core.events import Event, format_ts, parse_event
from decisions.core.rawredis import RawPipeline, RawScript
from decisions.core.settings import Settings
from decisions.runtime.actions import Context, Effect, run_actions
from decisions.runtime.active import Runtime
from decisions.runtime.archive import EventArchive
from decisions.runtime.customers import CustomerCache, queue_fills
from decisions.runtime.engine import Match, RuleEngine, build_fact
from decisions.runtime.kafka import Consumer, GroupRebalanced, Producer, ensure_topics
from decisions.runtime.offers import OfferStore, action_id
from decisions.runtime.recommend import INCREMENT, PopularityBatch, Recommender
from decisions.runtime.state import Applied, StateStore
from rulesets.store import RulesetStore

log = logging.getLogger(__name__)
PRUNE_EVERY_SECONDS = 3600.0
TIMER_CHECK_SECONDS = 0.25  # due deadlines are looked for (and fired) this often
PRODUCER_LINGER_MS = 1000  # records of a batch wait for its flush, not a timer
STATE_CHUNKS = 4  # state pipelines per batch: Redis runs the next while rules evaluate this
STATE_CHUNK_MIN, STATE_CHUNK_MAX = 16, 100  # events per state pipeline
MAX_TAILS = 2  # durable halves in flight at once; one more waits for the oldest


@dataclass
class Stats:
    processed: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    fired: int = 0
    batches: int = 0
    effects: int = 0
    reloads: int = 0
    retries: int = 0
    rebalances: int = 0
    max_in_flight: int = 0  # most records held at once (bounded by 4 * batch_size)
    scorer_errors: int = 0
    phase_seconds: dict[str, float] = field(default_factory=dict)  # where batch time goes


@dataclass
class _Staged:
    """A polled batch whose state scripts are running; decided on the next round."""

    started: float
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    dead: list[tuple[Any, str, str]] = field(default_factory=list)
    chunks: list[Future[list[Applied]]] = field(default_factory=list)
    # customer attributes, and cache entries to write with the batch (CustomerCache.lookup)
    customers: Future[tuple[dict[str, dict[str, Any]], list[tuple[str, bytes]]]] | None = None


@dataclass
class _InFlight:
    """A batch whose effects are being made durable; its offsets wait for that."""

    offsets: dict[TopicPartition, int]
    fresh: list[Applied]
    effects: int
    started: float
    keys: set[tuple[str, str]]
    tail: Future[None] | None = None


class Worker:
    def __init__(self, settings: Settings, *, scorer: Any | None = None,
                 scorer_factory: Callable[[], Any | None] | None = None) -> None:
        """``scorer``: a ready ``decisions.runtime.ml.scoring.Scorer``-like object; or
        ``scorer_factory``, called once the first active rule reads a score (the model
        stack is heavy to import: a worker whose rules need no scores never loads it)."""
        self.settings = settings
        self.redis = redis.Redis.from_url(str(settings.redis_url), socket_timeout=5,
                                          socket_connect_timeout=2)
        self.db: Engine = make_engine(str(settings.database_url))
        self.state = StateStore(self.redis, settings.dedup_ttl_seconds)
        self.offers = OfferStore(self.redis)
        self.customers = CustomerCache(self.redis, self.db)
        self.recommender = Recommender(self.redis)
        self.archive = EventArchive(self.db)
        self.runtime = Runtime(RulesetStore(self.db), RuleEngine(),
                               settings.reload_interval_seconds)
        self._drop_deadline = RawScript(DROP_DEADLINE)
        self._increment = RawScript(INCREMENT)
        self.scorer = scorer
        self._scorer_factory = scorer_factory
        self._pg = ThreadPoolExecutor(max_workers=1, thread_name_prefix="worker-pg")
        self._state_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="worker-state")
        self._tail = ThreadPoolExecutor(max_workers=1, thread_name_prefix="worker-tail")
        self._lookup = ThreadPoolExecutor(max_workers=1, thread_name_prefix="worker-customers")
        # batches whose durable half runs (oldest first); committed in order once done
        self._inflight: deque[_InFlight] = deque()
        # consent changed by the batch decided last: a batch staged before it was decided
        # may have read the customers earlier
        self._consent_changed: dict[str, bool] = {}
        self._reload_due = False  # the housekeeping thread saw a new active ruleset marker
        self._staged: _Staged | None = None
        # per partition, the offset up to which effects are durable (committed or not)
        self._durable: dict[TopicPartition, int] = {}
        self.stats = Stats()
        self._refreshed = 0.0
        self._pruned = 0.0
        self._lag_checked = 0.0
        self._models_refreshed = 0.0
        self._housekeeping_stop = threading.Event()
        self._housekeeping_warned = 0.0
        self._stop = False
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def request_stop(self, *_: Any) -> None:
        self._stop = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def start(self) -> None:
        ensure_topics(self.settings)
        # a batch's records are sent together and flushed at once: a long linger keeps the
        # producer's I/O thread from sending (and waking) record by record meanwhile
        self._producer = Producer(self.settings, client_id="decisions-worker",
                                  linger_ms=PRODUCER_LINGER_MS)
        self._consumer = Consumer(self.settings, [self.settings.events_topic])
        self.runtime.refresh(force=True)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
        if self._producer is not None:
            self._producer.close()
        self._abandon()
        self._tail.shutdown(wait=True)
        self._lookup.shutdown(wait=True)
        self._pg.shutdown(wait=True)
        self._state_pool.shutdown(wait=True)
        self.redis.close()
        self.db.dispose()

    def run(self, *, max_messages: int | None = None, timeout: float | None = None,
            idle_timeout: float | None = None) -> Stats:
        """Consume until stopped, or until ``max_messages`` / ``timeout`` / ``idle_timeout``."""
        if self._consumer is None:
            self.start()
        assert self._consumer is not None
        started = last_record = time.monotonic()
        backoff = 0.1
        housekeeping = threading.Thread(target=self._housekeeping, name="worker-housekeeping",
                                        daemon=True)
        self._housekeeping_stop.clear()
        housekeeping.start()
        try:
            self._consume(started, last_record, backoff, max_messages, timeout, idle_timeout)
        finally:
            self._housekeeping_stop.set()
            housekeeping.join()
        return self.stats

    def _consume(self, started: float, last_record: float, backoff: float,
                 max_messages: int | None, timeout: float | None,
                 idle_timeout: float | None) -> None:
        assert self._consumer is not None
        while not self._stop:
            now = time.monotonic()
            if timeout is not None and now - started > timeout:
                break
            if idle_timeout is not None and now - last_record > idle_timeout:
                break
            if max_messages is not None and self.stats.processed + self.stats.dead_lettered \
                    + self.stats.duplicates >= max_messages:
                break
            try:
                if self._staged is None or self._reload_due:
                    # a reload changes what the state scripts compute: none may be staged
                    self.decide_staged()
                    self.refresh()
                generation = self._consumer.generation
                records = self._consumer.poll(
                    0 if self._staged is not None else self.settings.poll_timeout_ms)
                if self._consumer.generation != generation:
                    # kafka-python runs the rebalance listener on its I/O thread, where no
                    # commit may block: settle now, for the partitions still ours (those
                    # that moved are replayed by their new owner from the committed offset,
                    # which drops or idempotently redoes what was done here)
                    self.decide_staged()
                    self.settle(wait=True)
                if records:
                    last_record = time.monotonic()
                    held = len(records) + (len(self._staged.events) if self._staged else 0) \
                        + sum(len(b.fresh) for b in self._inflight)
                    self.stats.max_in_flight = max(self.stats.max_in_flight, held)
                    self.process(records)
                elif self._staged is not None:
                    self.decide_staged()
                else:
                    self.settle()  # idle: commit what is in flight now
                self._settle_ready()
                self._update_lag()
                backoff = 0.1
            except GroupRebalanced as exc:
                # Only the commit failed: the batch's effects are stored and its events
                # marked done. A partition we keep goes on from our position (the next
                # commit covers it); one that moved is replayed by its new owner from the
                # committed offset, and its events are dropped there as duplicates.
                self.stats.rebalances += 1
                log.info("commit refused after a rebalance (%s); continuing", exc)
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError,
                    OperationalError, ServiceUnavailable, KafkaError) as exc:
                backoff = self._retry(exc, backoff)
        try:
            self.decide_staged()
            self.settle(wait=True)
        except GroupRebalanced as exc:
            log.info("last commit refused after a rebalance (%s)", exc)
        except (redis.RedisError, OperationalError, ServiceUnavailable, KafkaError) as exc:
            self._abandon()
            log.warning("last batch not committed (%s: %s); it is replayed on restart",
                        type(exc).__name__, exc)

    def _housekeeping(self) -> None:
        """Off the consuming thread, so a batch never waits for it: fire due timers (their
        broker acks take milliseconds), look for a new active ruleset version (the
        consuming thread loads it between batches), re-read changed customers and stock,
        prune the archive. A dependency that is down is retried on the next round."""
        while not self._housekeeping_stop.wait(TIMER_CHECK_SECONDS):
            try:
                self.fire_due_timers()
                now = time.monotonic()
                if now - self._refreshed >= self.settings.reload_interval_seconds:
                    self._refreshed = now
                    if self.runtime.store.active_marker() != self.runtime.marker:
                        self._reload_due = True
                    self.customers.invalidate_changed()
                    self.recommender.refresh_stock(self.db)
                    self._prune_archive()
            except (redis.RedisError, OperationalError, ServiceUnavailable, KafkaError) as exc:
                if time.monotonic() - self._housekeeping_warned >= 5.0:  # not 4 lines a second
                    self._housekeeping_warned = time.monotonic()
                    log.warning("housekeeping deferred: %s unavailable (%s)",
                                _service_of(exc), exc)
            except Exception:  # noqa: BLE001 - never let this thread die silently
                log.exception("housekeeping failed; retrying")

    def refresh(self) -> None:
        """Between batches: a new ruleset version (once the housekeeping thread saw its
        marker change), model versions (customers, stock and timers are the housekeeping
        thread's)."""
        if self._reload_due:
            self._reload_due = False
            if self.runtime.refresh(force=True):
                self.stats.reloads += 1
        now = time.monotonic()
        if now - self._models_refreshed >= self.settings.reload_interval_seconds:
            self._models_refreshed = now
            if self.scorer is None and self._scorer_factory is not None \
                    and self.runtime.uses_scores:
                factory, self._scorer_factory = self._scorer_factory, None
                self.scorer = factory()
            if self.scorer is not None:
                try:
                    self.scorer.refresh()
                except Exception:  # noqa: BLE001 - models must never stop decisions
                    metrics.SCORER_ERRORS.labels("refresh").inc()
                    log.warning("model scorer refresh failed", exc_info=True)

    def _prune_archive(self) -> None:
        """Once an hour (any worker may do it; the archive serialises with a lock), drop
        event-archive partitions older than ``DECISIONS_EVENT_RETENTION_DAYS``."""
        now = time.monotonic()
        if self._pruned and now - self._pruned < PRUNE_EVERY_SECONDS:
            return
        self._pruned = now
        try:
            result = self.archive.prune(self.settings.event_retention_days)
        except OperationalError:
            log.warning("event archive retention skipped: PostgreSQL unavailable")
            return
        if result.dropped:
            log.info("event archive: dropped partitions %s", ", ".join(result.dropped))

    def _retry(self, exc: BaseException, backoff: float) -> float:
        """A dependency failed mid-batch: pause, wait, rewind to the committed offsets."""
        assert self._consumer is not None
        self._abandon()
        service = _service_of(exc)
        metrics.RETRIES.labels(service).inc()
        self.stats.retries += 1
        log.warning("%s unavailable (%s: %s); retrying in %.1fs without committing",
                    service, type(exc).__name__, exc, backoff)
        try:
            self._consumer.pause()
            deadline = time.monotonic() + backoff
            while not self._stop and time.monotonic() < deadline:
                time.sleep(min(0.05, backoff))
            self._consumer.seek_to_committed()
            self._consumer.resume()
        except KafkaError as again:  # the broker is away too: the next round retries
            log.warning("cannot rewind to the committed offsets yet: %s", again)
        return min(backoff * 2, self.settings.worker_retry_max_seconds)

    def _update_lag(self) -> None:
        assert self._consumer is not None
        now = time.monotonic()
        if now - self._lag_checked < self.settings.worker_lag_interval_seconds:
            return
        self._lag_checked = now
        metrics.LAG.set(self._consumer.lag())

    def _score(self, snapshot: dict[str, Any], customer: dict[str, Any],
               ) -> tuple[dict[str, float], dict[str, int]]:
        if self.scorer is None or not self.runtime.uses_scores:
            return {}, {}
        try:
            scores, versions = self.scorer.score(snapshot, customer)
            return dict(scores), dict(versions)
        except Exception:  # noqa: BLE001 - decide without scores rather than not at all
            metrics.SCORER_ERRORS.labels("score").inc()
            self.stats.scorer_errors += 1
            log.debug("model scoring failed", exc_info=True)
            return {}, {}

    # -- one batch ---------------------------------------------------------------------
    def process(self, records: Sequence[Any]) -> None:
        """Stage a polled batch (parse; its state scripts start on the state thread), then
        decide the batch staged before it while Redis works on this one's state.

        Only a full stream is worth the overlap: a batch of less than half
        ``batch_size`` (records trickling in) is decided at once, for latency; staging
        it would only wait for the next poll."""
        staged = self._stage(records)
        previous, self._staged = self._staged, None
        if previous is not None:
            self._decide(previous)
        if len(records) >= max(1, self.settings.batch_size // 2):
            self._staged = staged
        else:
            self._decide(staged)

    def decide_staged(self) -> None:
        """Decide the staged batch now (idle, reloading, rebalanced, stopping)."""
        staged, self._staged = self._staged, None
        if staged is not None:
            self._decide(staged)

    def _stage(self, records: Sequence[Any]) -> _Staged:
        mark = _Phases(self.stats.phase_seconds)
        batch = _Staged(time.monotonic())
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            batch.offsets[tp] = max(batch.offsets.get(tp, 0), record.offset + 1)
            event, reason, detail = self._parse(record.value)
            if event is None:
                batch.dead.append((record, reason, detail))
            else:
                batch.events.append(event)
        batch.chunks = self._submit_state(batch.events)
        # customer attributes are read meanwhile too (Redis, PostgreSQL for cache misses)
        batch.customers = self._lookup.submit(self.customers.lookup,
                                              [e.user_id for e in batch.events])
        mark("parse")
        return batch

    def _decide(self, batch: _Staged) -> None:
        assert self._producer is not None and self._consumer is not None
        batch_started = batch.started
        offsets, dead = batch.offsets, batch.dead
        mark = _Phases(self.stats.phase_seconds)

        assert batch.customers is not None
        customers, cache_fills = batch.customers.result()
        # consent changed by the batch decided before this one, maybe after these were read
        changed, self._consent_changed = self._consent_changed, {}
        for user_id, granted in changed.items():
            if user_id in customers:
                customers[user_id] = {**customers[user_id], "consent": granted}
        mark("customers")
        in_batch: set[tuple[str, str]] = set()
        fresh: list[Applied] = []
        pipe = RawPipeline(self.redis)
        popularity = PopularityBatch(self.runtime.models)
        latest: dict[str, int] = {}  # per user, the newest event time (for the timers)
        fired: list[tuple[Applied, Match, bool, dict[str, int]]] = []
        by_type: Counter[str] = Counter()
        # events of the batches in flight are not marked done yet: drop their repeats here
        in_flight: set[tuple[str, str]] | frozenset[tuple[str, str]] = (
            self._inflight[0].keys if len(self._inflight) == 1
            else set().union(*(b.keys for b in self._inflight)))
        # rules read scores but the scorer has no model loaded: skip it per event
        unscored: int | None = (
            0 if self.scorer is not None and self.runtime.uses_scores
            and getattr(self.scorer, "empty", False) else None)
        for item in self._state_results(batch.chunks):
            key = (item.event.user_id, item.event.event_id)
            if item.done or key in in_batch or key in in_flight:
                metrics.DUPLICATES.inc()
                self.stats.duplicates += 1
                continue
            in_batch.add(key)
            fresh.append(item)
            event = item.event
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
            if customer.get("consent") is False:
                continue
            if unscored is None:
                scores, model_versions = self._score(item.snapshot, customer)
            else:  # no model loaded: missing scores counted per batch, below
                unscored += 1
                scores, model_versions = {}, {}
            fact = build_fact(event, item.snapshot, customer, scores)
            for compiled in self.runtime.active:
                if event.type not in compiled.by_type:
                    continue
                for match in self.runtime.engine.evaluate(compiled, event, fact):
                    fired.append((item, match, compiled.stacking, model_versions))
        if unscored and self.scorer is not None:
            self.scorer.count_missing(unscored)
        for etype, n in by_type.items():  # one metric update per type, not per event
            metrics.EVENTS.labels(etype).inc(n)
            self.stats.processed += n
        popularity.queue(pipe, self._increment)
        queue_fills(pipe, cache_fills)
        deadlines = self._deadlines(latest)
        if deadlines:  # one command for the batch; GT: a late event never pulls one earlier
            flat: list[str | int] = []
            for member, due in deadlines.items():
                flat += (due, member)
            pipe.command("ZADD", keys.DEADLINES, "GT", *flat)
        mark("state_rules")

        # actions, once every rule of the batch is known. Only the last recommendation per
        # user and slot of the batch is computed, stored and published (the slot holds the
        # latest); the earlier ones are logged as superseded by it. What the survivors
        # read is read at once.
        superseded = _superseded_recommendations(fired)
        self.recommender.prefetch(
            (item.event.user_id, item.snapshot, str(params.get("strategy", "")))
            for n, (item, match, _, _) in enumerate(fired)
            for i, action in enumerate(match.actions)
            for name, params in action.items()
            if name == "recommend" and i not in superseded.get(n, ()))
        effects: list[Effect] = []
        decision_rows: list[dict[str, Any]] = []
        by_rule: Counter[tuple[str, str]] = Counter()
        for n, (item, match, stacking, model_versions) in enumerate(fired):
            by_rule[(match.ruleset, match.rule)] += 1
            self.stats.fired += 1
            ctx = Context(item.event, item.snapshot, match, stacking, self.recommender)
            for effect in run_actions(ctx, superseded.get(n)):
                if effect.superseded_by is None:
                    effects.append(effect)
                decision_rows.append(_decision_row(effect, match, model_versions))
        self.recommender.clear()
        for (ruleset, rule), n in by_rule.items():
            metrics.DECISIONS.labels(ruleset, rule).inc(n)
        mark("actions")

        # Three stores written at once, all awaited before anything is marked done or
        # committed: PostgreSQL (archive, decisions) in a helper thread, Redis here first
        # (what the API reads: visible soonest), then Kafka (acknowledged by the
        # producer's I/O thread meanwhile).
        archived = self._pg.submit(self._archive, [a.event for a in fresh], decision_rows)
        now_ms = int(time.time() * 1000)
        for effect in effects:  # one recommendation per user and slot (superseded: above)
            self._queue_effect(pipe, effect, now_ms)
        pipe.execute()
        mark("redis_write")
        for record, reason, detail in dead:
            self._producer.send(
                self.settings.dead_letter_topic, _key(record), record.value or b"",
                headers=_dead_letter_headers(record, reason, detail))
            metrics.DEAD_LETTERED.labels(reason).inc()
            self.stats.dead_lettered += 1
        decided_at = format_ts(datetime.now(UTC))  # one clock reading per batch
        for effect in effects:
            self._producer.send(self.settings.actions_topic, effect.user_id,
                                _action_message(effect, decided_at))
        mark("publish")

        # The rest makes the batch durable: broker acks, the PostgreSQL write, events
        # marked done. It runs on the tail thread while the next batches are processed;
        # the offsets are committed (here, on this thread, in batch order) once it has
        # finished. Only when MAX_TAILS batches are still in their tails does this
        # thread wait for the oldest.
        durable = _InFlight(offsets, fresh, len(effects), batch_started,
                            {(e.event.user_id, e.event.event_id) for e in fresh})
        durable.tail = self._tail.submit(self._finish, durable, archived)
        self._inflight.append(durable)
        self._settle_ready()
        if len(self._inflight) > MAX_TAILS:
            self._settle(len(self._inflight) - MAX_TAILS)

    def _finish(self, batch: _InFlight, archived: Future[None]) -> None:
        """The batch's durable half (tail thread): acks, archive, then marked done."""
        assert self._producer is not None
        mark = _Phases(self.stats.phase_seconds)
        self._producer.flush()
        mark("publish_ack")
        archived.result()
        mark("archive")
        self.state.mark_done([a.event for a in batch.fresh])
        mark("mark_done")

    def _settle(self, count: int, *, wait: bool = False) -> None:
        """Wait for the durable halves of the ``count`` oldest batches in flight, then
        commit their offsets (their effects are stored). The commit is asynchronous
        unless ``wait`` (stopping, or after a rebalance)."""
        assert self._consumer is not None
        mark = _Phases(self.stats.phase_seconds)
        settled: list[_InFlight] = []
        offsets: dict[TopicPartition, int] = {}
        for _ in range(count):
            batch = self._inflight[0]
            assert batch.tail is not None
            batch.tail.result()  # a failure leaves it (and the later ones) uncommitted
            self._inflight.popleft()
            settled.append(batch)
            for tp, off in batch.offsets.items():
                offsets[tp] = max(offsets.get(tp, 0), off)
                self._durable[tp] = max(self._durable.get(tp, 0), off)
        mark("tail_wait")
        if wait:
            self._commit_durable()
        elif offsets:
            owned = self._consumer.assignment()
            offsets = {tp: off for tp, off in offsets.items() if tp in owned}
            if offsets:
                self._consumer.commit_async(offsets)
        mark("commit")
        done_at = time.time()
        observe = metrics.LATENCY.observe
        for batch in settled:
            self.stats.batches += 1
            self.stats.effects += batch.effects
            for item in batch.fresh:
                observe(max(0.0, done_at - item.event.ts_ms / 1000))
            metrics.BATCH_SECONDS.observe(time.monotonic() - batch.started)

    def _settle_ready(self) -> None:
        """Commit the oldest batches whose durable halves have finished (no waiting)."""
        ready = 0
        for batch in self._inflight:
            if batch.tail is None or not batch.tail.done():
                break
            ready += 1
        if ready:
            self._settle(ready)

    def settle(self, *, wait: bool = False) -> None:
        """Commit every batch in flight (idle, stopping, partitions revoked); with
        ``wait``, synchronously, and every durable offset still ours."""
        if self._inflight:
            self._settle(len(self._inflight), wait=wait)
        elif wait:
            self._commit_durable()

    def _commit_durable(self) -> None:
        """Commit, synchronously, every durable offset of the partitions still ours (an
        asynchronous commit may have failed; after a rebalance the rest moved away)."""
        assert self._consumer is not None
        owned = self._consumer.assignment()
        self._durable = {tp: off for tp, off in self._durable.items() if tp in owned}
        if self._durable:
            self._consumer.commit(dict(self._durable))

    def _abandon(self) -> None:
        """After a failure: forget the batches in flight without committing (they are
        replayed from the committed offsets), once their tails have stopped touching
        anything."""
        staged, self._staged = self._staged, None
        if staged is not None:
            _drain(staged.chunks)
            if staged.customers is not None:
                staged.customers.exception()
        self._consent_changed = {}
        while self._inflight:
            batch = self._inflight.popleft()
            if batch.tail is not None:
                batch.tail.exception()

    def _submit_state(self, events: list[Event]) -> list[Future[list[Applied]]]:
        """Apply a batch to user state in chunks, in order, on the state thread: Redis runs
        them while this thread decides the previous batch, and the next chunk while rules
        evaluate this one."""
        size = max(STATE_CHUNK_MIN, min(STATE_CHUNK_MAX, -(-len(events) // STATE_CHUNKS)))
        # only the windowed features rules read, unless a model scores (it reads most)
        models = self.scorer is not None and bool(getattr(self.scorer, "versions", None))
        self.state.wanted = "" if models and self.runtime.uses_scores else self.runtime.wanted
        return [self._state_pool.submit(self.state.apply_batch, events[i:i + size])
                for i in range(0, len(events), size)]

    @staticmethod
    def _state_results(chunks: list[Future[list[Applied]]]) -> Iterator[Applied]:
        try:
            for chunk in chunks:
                yield from chunk.result()
        finally:
            _drain(chunks)

    def _archive(self, events: list[Event], decision_rows: list[dict[str, Any]]) -> None:
        """Events and decisions of a batch, in one transaction (one connection checkout)."""
        if not events and not decision_rows:
            return
        with self.db.begin() as conn:
            self.archive.write_batch(events, conn)
            if decision_rows:
                if len({r["action_id"] for r in decision_rows}) < len(decision_rows):
                    # one statement may not update a row twice: the first of an id stays
                    # (two actions of one rule and kind share its id)
                    decision_rows = list({r["action_id"]: r for r in reversed(decision_rows)}
                                         .values())
                conn.execute(_INSERT_DECISIONS, {"rows": orjson.dumps(decision_rows).decode()})

    def _parse(self, raw: bytes | None) -> tuple[Event | None, str, str]:
        if raw is None:
            return None, "empty", "record has no value"
        if len(raw) > self.settings.max_event_bytes:
            return None, "too_large", f"{len(raw)} bytes > {self.settings.max_event_bytes}"
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return None, "invalid_json", str(exc)
        try:
            return parse_event(data, internal=True), "", ""
        except ValidationError as exc:
            detail = "; ".join(str(d) for d in exc.details)
            reason = "unknown_type" if any(d.field == "type" and "unknown" in d.message
                                           for d in exc.details) else "invalid_event"
            return None, reason, detail

    def _queue_effect(self, pipe: RawPipeline, effect: Effect, now_ms: int) -> None:
        ttl = self.settings.offer_ttl_seconds
        if effect.kind == "offer":
            self.offers.store_offer(pipe, effect.user_id, effect.payload, now_ms, ttl)
        elif effect.kind == "recommendation":
            self.offers.store_recommendation(pipe, effect.user_id, effect.payload["slot"],
                                             effect.payload, ttl)
        elif effect.kind == "segment":
            pipe.command("SADD", keys.segments(effect.user_id), effect.payload["segment"])

    # -- deadlines: absences become timer events --------------------------------------
    def _deadlines(self, latest: dict[str, int]) -> dict[str, int]:
        """Every timer of the active rules is due its delay after the user's newest event
        (of this batch; ``ZADD GT`` keeps a later deadline already set)."""
        timers = self.runtime.timers
        if not timers:
            return {}
        return {f"{user_id}|{name}": ts_ms + delay_ms
                for user_id, ts_ms in latest.items() for name, delay_ms in timers}

    def fire_due_timers(self, limit: int = 500) -> int:
        """Produce a timer event for every deadline that passed (wall clock), then drop it.

        Produced before removal: a crash in between re-fires the timer with the same
        deterministic event id, which dedup drops."""
        assert self._producer is not None
        now_ms = int(time.time() * 1000)
        due: list[tuple[bytes, float]] = self.redis.zrangebyscore(  # type: ignore[assignment]
            keys.DEADLINES, "-inf", now_ms, start=0, num=limit, withscores=True)
        if not due:
            return 0
        records = []
        for member, score in due:
            user_id, _, name = member.decode().rpartition("|")
            due_ts = datetime.fromtimestamp(score / 1000, UTC)
            records.append((user_id, {
                "event_id": f"timer:{name}:{user_id}:{int(score)}", "type": "timer",
                "user_id": user_id, "ts": format_ts(due_ts),
                "properties": {"timer": name, "due": format_ts(due_ts)},
            }))
        self._producer.send_many(self.settings.events_topic, records)
        pipe = RawPipeline(self.redis)
        for member, score in due:
            # only if unchanged: another worker may have pushed the deadline meanwhile
            pipe.script(self._drop_deadline, (keys.DEADLINES,), (member, int(score)))
        pipe.execute()
        return len(records)


# a batch's decision rows travel as one JSON array (see EventArchive.write_batch)
_INSERT_DECISIONS = text(
    "INSERT INTO decisions (action_id, user_id, event_id, ruleset, ruleset_version, rule, kind,"
    " payload, reason, model_versions, decided_at, event_ts) "
    "SELECT r.action_id, r.user_id, r.event_id, r.ruleset, r.ruleset_version, r.rule, r.kind,"
    " r.payload, r.reason, r.model_versions, now(), r.event_ts "
    "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(action_id text, user_id text,"
    " event_id text, ruleset text, ruleset_version integer, rule text, kind text, payload jsonb,"
    " reason jsonb, model_versions jsonb, event_ts timestamptz) "
    # a replay in other batch boundaries may produce what the first run superseded: the
    # row then says produced (a row never claims superseded for a published action)
    "ON CONFLICT (action_id) DO UPDATE SET payload = EXCLUDED.payload"
    " WHERE decisions.payload -> 'superseded_by' IS NOT NULL"
    " AND EXCLUDED.payload -> 'superseded_by' IS NULL")

DROP_DEADLINE = """
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if cur and tonumber(cur) == tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""


def _drain(chunks: list[Future[list[Applied]]]) -> None:
    """After a failure: let the rest of a batch's state chunks finish before a retry."""
    for chunk in chunks:
        if not chunk.cancel():
            chunk.exception()


class _Phases:
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


def _key(record: Any) -> str | None:
    return record.key.decode("utf-8", "replace") if record.key else None


def _dead_letter_headers(record: Any, reason: str, detail: str) -> list[tuple[str, bytes]]:
    """The dead letter's value is the original bytes; why and where from go in headers."""
    return [("dlq.reason", reason.encode()), ("dlq.detail", detail[:2000].encode()),
            ("dlq.topic", record.topic.encode()), ("dlq.partition", str(record.partition).encode()),
            ("dlq.offset", str(record.offset).encode())]


def _service_of(exc: BaseException) -> str:
    if isinstance(exc, redis.RedisError):
        return "redis"
    if isinstance(exc, OperationalError):
        return "postgresql"
    if isinstance(exc, ServiceUnavailable):
        return exc.service.lower()
    if isinstance(exc, KafkaError):
        return "kafka"
    return "unknown"


def _superseded_recommendations(
        fired: list[tuple[Applied, Match, bool, dict[str, int]]]) -> dict[int, dict[int, str]]:
    """The recommend actions of a batch that a later one for the same user and slot
    replaces: index in ``fired`` -> index of the action -> the surviving action's id.

    The survivor's id is its own deterministic one (event, ruleset, rule, kind), so a
    replay of the same batch supersedes the same actions by the same ids."""
    last: dict[tuple[str, str], tuple[int, int]] = {}
    earlier: list[tuple[tuple[int, int], tuple[str, str]]] = []
    for n, (item, match, _, _) in enumerate(fired):
        for i, action in enumerate(match.actions):
            params = action.get("recommend")
            if params is None:
                continue
            slot = (item.event.user_id, str(params["slot"]))
            previous = last.get(slot)
            # (two recommend actions of one rule share the rule's action id: both stay)
            if previous is not None and previous[0] != n:
                earlier.append((previous, slot))
            last[slot] = (n, i)
    if not earlier:
        return {}
    out: dict[int, dict[int, str]] = {}
    for (m, i), slot in earlier:
        n, _ = last[slot]
        _, match, _, _ = fired[n]
        out.setdefault(m, {})[i] = action_id(fired[n][0].event.event_id, match.ruleset,
                                             match.rule, "recommendation")
    return out


def _decision_row(effect: Effect, match: Match, model_versions: dict[str, int]) -> dict[str, Any]:
    return {
        "action_id": effect.action_id, "user_id": effect.user_id,
        "event_id": effect.event.event_id, "ruleset": match.ruleset,
        "ruleset_version": match.version, "rule": match.rule, "kind": effect.kind,
        "payload": effect.payload, "reason": match.reason, "model_versions": model_versions,
        "event_ts": effect.event.ts,
    }


def _action_message(effect: Effect, decided_at: str) -> dict[str, Any]:
    return {
        "action_id": effect.action_id, "kind": effect.kind, "user_id": effect.user_id,
        "event_id": effect.event.event_id, "ruleset": effect.match.ruleset,
        "ruleset_version": effect.match.version, "rule": effect.match.rule,
        "payload": effect.payload, "reason": effect.match.reason,
        "decided_at": decided_at,
    }


def run_worker(settings: Settings) -> int:
    """One worker process: consume until SIGTERM/SIGINT, finish the batch, commit, exit."""
    if settings.worker_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_host)
        log.info("metrics on http://%s:%d/metrics", settings.worker_metrics_host,
                 settings.worker_metrics_port)
    worker = Worker(settings, scorer_factory=lambda: _load_scorer(settings))
    worker.install_signal_handlers()
    try:
        worker.start()
        # what is loaded by now (code, compiled rulesets, clients) lives as long as the
        # process: keep it out of the collector's full passes, which otherwise pause a
        # batch for milliseconds
        gc.freeze()
        stats = worker.run()
    finally:
        worker.close()
    log.info("worker stopped: %d processed, %d dead-lettered, %d duplicates, %d batches",
             stats.processed, stats.dead_lettered, stats.duplicates, stats.batches)
    return 0


def _load_scorer(settings: Settings) -> Any | None:
    try:
        from decisions.runtime.ml.scoring import Scorer

        return Scorer(make_engine(str(settings.database_url), pool_size=1))
    except Exception:  # noqa: BLE001 - a missing or broken model stack never stops decisions
        metrics.SCORER_ERRORS.labels("load").inc()
        log.exception("model scorer unavailable; rules on scores will not fire")
        return None

