"""The stream worker: Kafka events to decisions, effectively once.

Per batch, in order: validate (bad records to the dead-letter topic with the reason and
the original bytes) → apply to user state in Redis (dedup by event id) → enrich with
customer attributes → decide (``decisions.runtime.decide``: consent, model scores, every
active ruleset, actions) → store effects (offers, recommendations, segments) in Redis →
publish them to the actions topic → archive events and decisions in PostgreSQL → mark
events done → commit offsets (``checkpoint``). Of the recommendations of one user and slot
in a batch only the last is computed, stored and published (the slot holds the latest);
the earlier ones are logged as superseded by it.

Batches overlap, each in a different stage: while batch N is decided on this thread
(rules, actions, Redis writes, records handed to the producer), the state scripts of
batch N+1 run in Redis (state thread) and its customers are read (customers thread), and
batches N-1 and N-2 are made durable (tail thread, in order: broker acks, PostgreSQL,
marked done). Offsets are committed on this thread, in batch order, and only for a batch
whose durable half has finished; a crash anywhere before that replays the batch, and
deterministic action ids make the replay write the same effects again instead of new
ones. When Redis, PostgreSQL or the broker fails, every batch not committed is replayed
with backoff from the committed offsets. Consequence of the overlap: a segment added by
batch N's actions is in the snapshots of batch N+2 on, not N+1 (within a batch it was
never visible either). A ruleset reload waits until nothing is staged, so every snapshot
is computed for the rules that evaluate it.

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
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from decisions.core import metrics
from decisions.core.db import make_engine
from decisions.core.errors import ConfigError, ServiceUnavailable
from decisions.core.resp import cluster
from decisions.core.resp.pipeline import RawScript
from decisions.core.settings import Settings
from decisions.core.tracing import setup as setup_tracing
from decisions.runtime.active import Runtime
from decisions.runtime.archive import EventArchive
from decisions.runtime.customers import CustomerCache
from decisions.runtime.decide import Decider, Scorer
from decisions.runtime.engine import RuleEngine
from decisions.runtime.kafka import (
    BrokerError,
    Consumer,
    GroupRebalanced,
    Partition,
    Producer,
    ensure_topics,
)
from decisions.runtime.offers import OfferStore
from decisions.runtime.recommend import INCREMENT, Recommender
from decisions.runtime.state import StateStore
from decisions.runtime.worker.batch import BatchSteps
from decisions.runtime.worker.checkpoint import (
    MAX_TAILS,
    Checkpoint,
)
from decisions.runtime.worker.housekeeping import Housekeeping, is_outage, service_of
from decisions.runtime.worker.records import intake_window, timer_headers
from decisions.runtime.worker.sinks import DecisionLog, Effects, Topics
from decisions.runtime.worker.stats import Stats
from decisions.runtime.worker.timers import TimerFirer
from rulesets.store import RulesetStore

log = logging.getLogger(__name__)
PRODUCER_LINGER_MS = 1000  # records of a batch wait for its flush, not a timer


class Worker(BatchSteps):
    def __init__(self, settings: Settings, *, scorer: Scorer | None = None,
                 scorer_factory: Callable[[], Scorer | None] | None = None) -> None:
        """``scorer``: a ready ``decisions.runtime.ml.scoring.Scorer``-like object; or
        ``scorer_factory``, called once the first active rule reads a score (the model
        stack is heavy to import: a worker whose rules need no scores never loads it)."""
        self.settings = settings
        self.redis = cluster.connect(str(settings.redis_url), settings.redis_cluster,
                                     socket_timeout=5, socket_connect_timeout=2)
        self.db: Engine = make_engine(str(settings.database_url))
        self.state = StateStore(self.redis, settings.dedup_ttl_seconds)
        self.offers = OfferStore(self.redis, settings.offer_cap_per_day,
                                 settings.offer_cap_per_week)
        self.customers = CustomerCache(self.redis, self.db)
        self.recommender = Recommender(self.redis)
        self.archive = EventArchive(self.db)
        self.decisions = DecisionLog(self.db)
        self.effects = Effects(self.offers, settings.offer_ttl_seconds)
        self.runtime = Runtime(RulesetStore(self.db), RuleEngine(),
                               settings.reload_interval_seconds)
        self.decider = Decider(self.runtime.engine, scorer)
        self.timers = TimerFirer(self.redis, settings.events_topic, timer_headers(settings))
        self._window = intake_window(settings)  # event times accepted
        self._increment = RawScript(INCREMENT)
        self._scorer_factory = scorer_factory
        self._pg = ThreadPoolExecutor(max_workers=1, thread_name_prefix="worker-pg")
        self._state_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="worker-state")
        self._tail = ThreadPoolExecutor(max_workers=1, thread_name_prefix="worker-tail")
        self._lookup = ThreadPoolExecutor(max_workers=1, thread_name_prefix="worker-customers")
        self.stats = Stats()
        self.checkpoint = Checkpoint(self.stats)
        # consent changed by the batch decided last: a batch staged before it was decided
        # may have read the customers earlier
        self._consent_changed: dict[str, bool] = {}
        self.housekeeping = Housekeeping(
            fire_timers=self.fire_due_timers, runtime=self.runtime, customers=self.customers,
            recommender=self.recommender, db=self.db, archive=self.archive,
            reload_interval=settings.reload_interval_seconds,
            retention_days=settings.event_retention_days)
        self._lag_checked = 0.0
        self._models_refreshed = 0.0
        self._stop = False
        # records still to decide one at a time after a batch failed on its own data
        self._isolate = 0
        self.tracing = setup_tracing(settings, "decisions-worker")
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._topics: Topics | None = None

    @property
    def scorer(self) -> Scorer | None:
        return self.decider.scorer

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
        self._topics = Topics(self._producer, self.settings)
        self._consumer = Consumer(self.settings, [self.settings.events_topic])
        self.checkpoint.consumer = self._consumer
        self.runtime.refresh(force=True)
        self.decider.uses_scores = self.runtime.uses_scores

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
        if self.tracing is not None:
            self.tracing.shutdown()

    def run(self, *, max_messages: int | None = None, timeout: float | None = None,
            idle_timeout: float | None = None) -> Stats:
        """Consume until stopped, or until ``max_messages`` / ``timeout`` / ``idle_timeout``."""
        if self._consumer is None:
            self.start()
        self.housekeeping.start()
        try:
            self._consume(max_messages, timeout, idle_timeout)
        finally:
            self.housekeeping.stop()
        return self.stats

    def _consume(self, max_messages: int | None, timeout: float | None,
                 idle_timeout: float | None) -> None:
        consumer, checkpoint = self._consumer, self.checkpoint
        assert consumer is not None
        started = last_record = time.monotonic()
        backoff = 0.1
        while not self._stop:
            now = time.monotonic()
            if timeout is not None and now - started > timeout:
                break
            if idle_timeout is not None and now - last_record > idle_timeout:
                break
            if max_messages is not None and self.stats.seen >= max_messages:
                break
            try:
                if checkpoint.staged is None or self.housekeeping.reload_due:
                    # a reload changes what the state scripts compute: none may be staged
                    self.decide_staged()
                    self.refresh()
                generation = consumer.generation
                records = consumer.poll(
                    0 if checkpoint.staged is not None else self.settings.poll_timeout_ms)
                if consumer.generation != generation:
                    # kafka-python runs the rebalance listener on its I/O thread, where no
                    # commit may block: settle now, for the partitions still ours (those
                    # that moved are replayed by their new owner from the committed offset,
                    # which drops or idempotently redoes what was done here)
                    self.decide_staged()
                    self.settle(wait=True)
                if records:
                    last_record = time.monotonic()
                    held = len(records) + checkpoint.held()
                    self.stats.max_in_flight = max(self.stats.max_in_flight, held)
                    self.process(records)
                elif checkpoint.staged is not None:
                    self.decide_staged()
                else:
                    self.settle()  # idle: commit what is in flight now
                checkpoint.settle_ready()
                self._update_lag()
                backoff = 0.1
            except GroupRebalanced as exc:
                # Only the commit failed: the batch's effects are stored and its events
                # marked done. A partition we keep goes on from our position (the next
                # commit covers it); one that moved is replayed by its new owner from the
                # committed offset, and its events are dropped there as duplicates.
                self.stats.rebalances += 1
                log.info("commit refused after a rebalance (%s); continuing", exc)
            except Exception as exc:  # noqa: BLE001 - sorted here: outage or a record's fault
                _stop_if_misconfigured(exc)
                if is_outage(exc):
                    backoff = self._retry(exc, backoff)
                else:
                    self._isolate_after(exc)
        try:
            self.decide_staged()
            self.settle(wait=True)
        except GroupRebalanced as exc:
            log.info("last commit refused after a rebalance (%s)", exc)
        except (redis.RedisError, OperationalError, ServiceUnavailable, BrokerError) as exc:
            self._abandon()
            log.warning("last batch not committed (%s: %s); it is replayed on restart",
                        type(exc).__name__, exc)

    def refresh(self) -> None:
        """Between batches: a new ruleset version (once the housekeeping thread saw its
        marker change), model versions (customers, stock and timers are the housekeeping
        thread's)."""
        if self.housekeeping.reload_due:
            self.housekeeping.reload_due = False
            if self.runtime.refresh(force=True):
                self.stats.reloads += 1
            self.decider.uses_scores = self.runtime.uses_scores
        now = time.monotonic()
        if now - self._models_refreshed >= self.settings.reload_interval_seconds:
            self._models_refreshed = now
            if self.decider.scorer is None and self._scorer_factory is not None \
                    and self.runtime.uses_scores:
                factory, self._scorer_factory = self._scorer_factory, None
                self.decider.scorer = factory()
            if self.decider.scorer is not None:
                try:
                    self.decider.scorer.refresh()
                except Exception:  # models must never stop decisions
                    metrics.SCORER_ERRORS.labels("refresh").inc()
                    log.warning("model scorer refresh failed", exc_info=True)

    def _retry(self, exc: BaseException, backoff: float) -> float:
        """A dependency failed mid-batch: pause, wait, rewind to the committed offsets."""
        assert self._consumer is not None
        self._abandon()
        service = service_of(exc)
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
        except BrokerError as again:  # the broker is away too: the next round retries
            log.warning("cannot rewind to the committed offsets yet: %s", again)
        return min(backoff * 2, self.settings.worker_retry_max_seconds)

    def _update_lag(self) -> None:
        assert self._consumer is not None
        now = time.monotonic()
        if now - self._lag_checked < self.settings.worker_lag_interval_seconds:
            return
        self._lag_checked = now
        metrics.LAG.set(self._consumer.lag())

    # -- one batch ---------------------------------------------------------------------
    def process(self, records: Sequence[Any]) -> None:
        """Stage a polled batch (parse; its state scripts start on the state thread), then
        decide the batch staged before it while Redis works on this one's state.

        Only a full stream is worth the overlap: a batch of less than half
        ``batch_size`` (records trickling in) is decided at once, for latency; staging
        it would only wait for the next poll. After a batch failed on its data, records
        are decided one at a time until the failing one is found (``_isolate_after``)."""
        if self._isolate:
            self._process_isolated(records)
            return
        staged = self._stage(records)
        previous, self.checkpoint.staged = self.checkpoint.staged, None
        if previous is not None:
            self._decide(previous)
        if len(records) >= max(1, self.settings.batch_size // 2):
            self.checkpoint.staged = staged
        else:
            self._decide(staged)

    def decide_staged(self) -> None:
        """Decide the staged batch now (idle, reloading, rebalanced, stopping)."""
        staged, self.checkpoint.staged = self.checkpoint.staged, None
        if staged is not None:
            self._decide(staged)

    def settle(self, *, wait: bool = False) -> None:
        """Commit every batch in flight (idle, stopping, partitions revoked)."""
        self.checkpoint.settle(wait=wait)

    def _isolate_after(self, exc: BaseException) -> None:
        """A batch failed on its data, not for an outage (a value a script or PostgreSQL
        refuses, an action that cannot compute): forget what is in flight, rewind to the
        committed offsets and decide every record that was staged or in flight one at a
        time, so that the one at fault is dead-lettered and no other is lost."""
        assert self._consumer is not None
        log.warning("a batch failed on its data (%s: %s); deciding its records one at a "
                    "time to dead-letter the one at fault", type(exc).__name__, exc)
        self._abandon()
        self.stats.isolations += 1
        self._isolate = (2 + MAX_TAILS) * self.settings.batch_size
        try:
            self._consumer.seek_to_committed()
        except BrokerError as again:  # the broker is away too: retry as for an outage
            self._retry(again, 0.1)

    def _process_isolated(self, records: Sequence[Any]) -> None:
        """Each record decided, made durable and committed alone; one that fails for a
        reason of its own goes to the dead-letter topic (``processing_error``)."""
        for record in records:
            try:
                self._decide(self._stage([record]))
                self.checkpoint.settle(wait=True)
            except GroupRebalanced:
                raise
            except Exception as exc:
                _stop_if_misconfigured(exc)
                if is_outage(exc):
                    raise
                self._abandon()
                log.error("record %s/%d@%d dead-lettered: %s: %s", record.topic,
                          record.partition, record.offset, type(exc).__name__, exc)
                self._dead_letter_alone(record, f"{type(exc).__name__}: {exc}")
            self._isolate = max(0, self._isolate - 1)

    def _dead_letter_alone(self, record: Any, detail: str) -> None:
        assert self._topics is not None and self._producer is not None
        self._topics.dead_letter(record, "processing_error", detail)
        self._producer.flush()
        self.stats.dead_lettered += 1
        tp = Partition(record.topic, record.partition)
        durable = self.checkpoint.durable
        durable[tp] = max(durable.get(tp, 0), record.offset + 1)
        self.checkpoint.commit_durable()

    def _abandon(self) -> None:
        """After a failure: forget what is staged and in flight, without committing."""
        self.checkpoint.abandon()
        self._consent_changed = {}

    def fire_due_timers(self, limit: int = 500) -> int:
        assert self._producer is not None
        return self.timers.fire_due(self._producer, limit)


def _stop_if_misconfigured(exc: BaseException) -> None:
    """A Redis error no retry fixes and no record causes (CROSSSLOT, WRONGTYPE, auth, the
    wrong cluster mode) would dead-letter every record, or retry for ever: the worker stops
    with one line naming the setting to change (nothing uncommitted is lost: it replays)."""
    fault = cluster.misconfiguration(exc)
    if fault is not None:
        raise ConfigError(f"the worker stops: {fault}") from None


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


def _load_scorer(settings: Settings) -> Scorer | None:
    try:
        from decisions.runtime.ml.scoring import Scorer as ModelScorer

        return ModelScorer(make_engine(str(settings.database_url), pool_size=1))
    except Exception:  # a missing or broken model stack never stops decisions
        metrics.SCORER_ERRORS.labels("load").inc()
        log.exception("model scorer unavailable; rules on scores will not fire")
        return None
