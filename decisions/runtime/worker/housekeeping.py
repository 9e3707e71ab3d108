"""The worker's housekeeping thread: off the consuming thread, so a batch never waits.

First it moves the counts of the single keys of before #20 (top sellers, most viewed,
returns) into their shards (``recommend.move_single_keys``). Every ``TIMER_CHECK_SECONDS``
it fires due timers (their broker acks take milliseconds); every
``reload_interval_seconds`` it looks for a new active ruleset version (the consuming
thread loads it between batches), re-reads changed customers and stock, and prunes the
event archive (hourly). A dependency that is down is retried on the next round.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from decisions.core.errors import ServiceUnavailable
from decisions.runtime.active import Runtime
from decisions.runtime.archive import EventArchive
from decisions.runtime.customers import CustomerCache
from decisions.runtime.kafka import BrokerError
from decisions.runtime.recommend import Recommender, move_single_keys

log = logging.getLogger(__name__)
PRUNE_EVERY_SECONDS = 3600.0
TIMER_CHECK_SECONDS = 0.25  # due deadlines are looked for (and fired) this often


class Housekeeping:
    def __init__(self, *, fire_timers: Callable[[], int], runtime: Runtime,
                 customers: CustomerCache, recommender: Recommender, db: Engine,
                 archive: EventArchive, reload_interval: float, retention_days: int) -> None:
        self.fire_timers = fire_timers
        self.runtime = runtime
        self.customers = customers
        self.recommender = recommender
        self.db = db
        self.archive = archive
        self.reload_interval = reload_interval
        self.retention_days = retention_days
        self.reload_due = False  # a new active ruleset marker was seen
        self._refreshed = 0.0
        self._pruned = 0.0
        self._warned = 0.0
        self._moved = False  # the single keys of before #20, into their shards
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="worker-housekeeping",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(TIMER_CHECK_SECONDS):
            try:
                self.round()
            except (redis.RedisError, OperationalError, ServiceUnavailable, BrokerError) as exc:
                if time.monotonic() - self._warned >= 5.0:  # not 4 lines a second
                    self._warned = time.monotonic()
                    log.warning("housekeeping deferred: %s unavailable (%s)",
                                service_of(exc), exc)
            except Exception:  # never let this thread die silently
                log.exception("housekeeping failed; retrying")

    def round(self) -> None:
        if not self._moved:
            moved = move_single_keys(self.recommender.client)
            self._moved = True
            if moved:
                log.info("moved %d top sellers, most viewed and returns counts of the single "
                         "keys of before #20 into their shards", moved)
        self.fire_timers()
        now = time.monotonic()
        if now - self._refreshed >= self.reload_interval:
            self._refreshed = now
            if self.runtime.store.active_marker() != self.runtime.marker:
                self.reload_due = True
            self.customers.invalidate_changed()
            self.recommender.refresh_stock(self.db)
            self._prune_archive()

    def _prune_archive(self) -> None:
        """Once an hour (any worker may do it; the archive serialises with a lock), drop
        event-archive partitions older than ``DECISIONS_EVENT_RETENTION_DAYS``."""
        now = time.monotonic()
        if self._pruned and now - self._pruned < PRUNE_EVERY_SECONDS:
            return
        self._pruned = now
        try:
            result = self.archive.prune(self.retention_days)
        except OperationalError:
            log.warning("event archive retention skipped: PostgreSQL unavailable")
            return
        if result.dropped:
            log.info("event archive: dropped partitions %s", ", ".join(result.dropped))


# error replies of a Redis that is briefly unable to serve, not of a command's values
_REDIS_BUSY = ("OOM", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "LOADING",
               "MOVED", "ASK ", "NOREPLICAS", "BUSY ")


def is_outage(exc: BaseException) -> bool:
    """Whether a failure is a service's (pause, retry, replay) rather than a record's own
    (dead-letter it, go on)."""
    if isinstance(exc, redis.ResponseError):
        return str(exc).startswith(_REDIS_BUSY)
    if isinstance(exc, redis.DataError):  # redis-py refused a value before sending it
        return False
    if isinstance(exc, DBAPIError):
        return isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated
    return isinstance(exc, redis.RedisError | ServiceUnavailable | BrokerError)


def service_of(exc: BaseException) -> str:
    """The service an outage error comes from, as metrics and logs name it."""
    if isinstance(exc, redis.RedisError):
        return "redis"
    if isinstance(exc, OperationalError):
        return "postgresql"
    if isinstance(exc, ServiceUnavailable):
        return exc.service.lower()
    if isinstance(exc, BrokerError):
        return "kafka"
    return "unknown"
