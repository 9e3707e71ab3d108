"""The API's shared clients and caches, opened in the lifespan and kept on ``app.state.api``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, cast

import anyio.to_thread
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request

from api import snapshot as snapshots
from api.breaker import CircuitBreaker
from api.metrics import Metrics
from api.snapshot import FallbackContent, Snapshot, load_database
from api.store import REDIS_ERRORS, RedisStore
from decisions.core.db import sqlalchemy_url
from decisions.core.errors import DecisionsError, ServiceUnavailable
from decisions.core.resp.cluster import misconfiguration
from decisions.core.settings import Settings
from decisions.core.tracing import TRACEPARENT, Tracing
from decisions.core.tracing import setup as setup_tracing
from decisions.runtime.apikeys import KeyCache, KeyInfo
from decisions.runtime.kafka import Producer

log = logging.getLogger("api")
T = TypeVar("T")
DB_ERRORS = (SQLAlchemyError, OSError)


def make_api_engine(settings: Settings) -> Engine:
    """PostgreSQL for the API: small pool, short connect and statement timeouts."""
    return create_engine(
        sqlalchemy_url(str(settings.database_url)),
        pool_size=4,
        max_overflow=4,
        pool_pre_ping=True,
        pool_timeout=1,
        connect_args={
            "connect_timeout": 2,
            "options": f"-c statement_timeout={settings.database_timeout_ms}",
        },
    )


@dataclass
class ApiState:
    settings: Settings
    metrics: Metrics
    engine: Engine
    redis: RedisStore
    fallback: FallbackContent
    keys: KeyCache
    snapshot: Snapshot = field(default_factory=Snapshot)
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    producer: Producer | None = None
    tracing: Tracing | None = None  # None: DECISIONS_TRACING=off
    _refresher: asyncio.Task[None] | None = None
    _producer_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # API key lookups in flight (api.auth), one per key
    verifying: dict[str, asyncio.Future[KeyInfo | None]] = field(default_factory=dict)
    # Redis errors no retry fixes (decisions.core.resp.cluster.misconfiguration), logged once
    _redis_faults: set[str] = field(default_factory=set)

    @classmethod
    def open(cls, settings: Settings, metrics: Metrics | None = None) -> ApiState:
        metrics = metrics or Metrics()
        state = cls(
            settings=settings,
            metrics=metrics,
            engine=make_api_engine(settings),
            redis=RedisStore(settings),
            fallback=replace(FallbackContent.from_file(settings.api_fallback_file),
                             saved=snapshots.load_saved(settings.var_dir)),
            keys=KeyCache(settings.apikey_cache_seconds),
            tracing=setup_tracing(settings, "decisions-api"),
        )
        for name in ("redis", "postgres", "kafka"):
            state.breakers[name] = CircuitBreaker(
                name, failures=settings.breaker_failures, reset=settings.breaker_reset_seconds,
                on_change=metrics.breaker_changed,
            )
            metrics.breaker_changed(name, "closed")
        return state

    @property
    def redis_breaker(self) -> CircuitBreaker:
        return self.breakers["redis"]

    @property
    def db_breaker(self) -> CircuitBreaker:
        return self.breakers["postgres"]

    @property
    def kafka_breaker(self) -> CircuitBreaker:
        return self.breakers["kafka"]

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.refresh(), timeout=3.0)
        self._refresher = asyncio.create_task(self._refresh_loop(), name="api-refresh")

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self.redis.close()
        if self.producer is not None:
            producer, self.producer = self.producer, None
            await anyio.to_thread.run_sync(producer.close)
        if self.tracing is not None:
            await anyio.to_thread.run_sync(self.tracing.shutdown)
        self.engine.dispose()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.catalog_refresh_seconds)
            try:
                await self.refresh()
            except Exception:  # a refresh must never kill the loop
                log.exception("background refresh failed")

    async def refresh(self) -> None:
        """Reload the catalog, consent list and top sellers; keep old copies on failure."""
        try:
            products, no_consent = await self.db(load_database, self.engine)
            self.snapshot.set_catalog(products, no_consent)
        except ServiceUnavailable:
            pass
        try:
            self.snapshot.top_sellers = await self.call_redis(self.redis.top_sellers())
        except ServiceUnavailable:
            pass
        if self.snapshot.database_loaded:
            top = FallbackContent().fallback_products(self.snapshot, snapshots.SAVED_COUNT)
            if top and tuple(top) != self.fallback.saved:
                self.fallback = replace(self.fallback, saved=tuple(top))
                try:
                    await anyio.to_thread.run_sync(snapshots.save, self.settings.var_dir, top)
                except OSError as exc:
                    log.warning("cannot save the top sellers to %s: %s",
                                self.settings.var_dir, exc)

    # -- calls behind breakers ----------------------------------------------------------

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking PostgreSQL call in a thread; ServiceUnavailable when it is down."""
        breaker = self.db_breaker
        if not breaker.allow():
            raise ServiceUnavailable("PostgreSQL", reason="circuit open",
                                     retry_after=breaker.retry_after())
        try:
            result = await anyio.to_thread.run_sync(fn, *args)
        except DB_ERRORS as exc:
            breaker.failure(exc)
            raise ServiceUnavailable("PostgreSQL", reason=type(exc).__name__,
                                     retry_after=breaker.retry_after()) from None
        except DecisionsError:
            breaker.success()  # PostgreSQL answered; the error is about the request
            raise
        breaker.success()
        return result

    def redis_fault(self, exc: BaseException) -> str:
        """Why a Redis call failed, for a 503's message: the error's type for a passing
        outage; for one no retry fixes (a misconfiguration: CROSSSLOT, WRONGTYPE, auth,
        cluster mode), the line naming the setting to change, also logged once."""
        fault = misconfiguration(exc)
        if fault is None:
            return type(exc).__name__
        kind = fault.split(" (", 1)[0]  # not the reply's detail (slot, node)
        if kind not in self._redis_faults:
            self._redis_faults.add(kind)
            log.error("API: %s", fault)
        return fault

    async def call_redis(self, call: Any) -> Any:
        """Await a Redis coroutine behind the breaker; ServiceUnavailable when it is down."""
        breaker = self.redis_breaker
        if not breaker.allow():
            call.close()
            raise ServiceUnavailable("Redis", reason="circuit open",
                                     retry_after=breaker.retry_after())
        try:
            result = await call
        except REDIS_ERRORS as exc:
            breaker.failure(exc)
            raise ServiceUnavailable("Redis", reason=self.redis_fault(exc),
                                     retry_after=breaker.retry_after()) from None
        breaker.success()
        return result

    async def produce(self, records: list[tuple[str, dict[str, Any]]],
                      traceparent: bytes | None = None) -> None:
        """Send to the events topic and return once the broker acknowledged every record.
        ``traceparent``: the W3C header every record carries (tracing on)."""
        breaker = self.kafka_breaker
        if not breaker.allow():
            raise ServiceUnavailable("Kafka", reason="circuit open",
                                     retry_after=breaker.retry_after())
        try:
            producer = await self._producer()
            headers = None
            if traceparent is not None:
                traced = [(TRACEPARENT, traceparent)]
                headers = lambda _value: traced  # noqa: E731
            await anyio.to_thread.run_sync(
                lambda: producer.send_many(self.settings.events_topic, records,
                                           timeout=self.settings.kafka_ack_timeout_seconds,
                                           headers=headers)
            )
        except DecisionsError as exc:
            breaker.failure(exc.message)
            raise ServiceUnavailable("Kafka", reason="no acknowledgement",
                                     retry_after=breaker.retry_after()) from None
        except Exception as exc:  # noqa: BLE001 - kafka-python raises more than KafkaError
            breaker.failure(exc)
            raise ServiceUnavailable("Kafka", reason=type(exc).__name__,
                                     retry_after=breaker.retry_after()) from None
        breaker.success()
        self.metrics.events.inc(len(records))

    async def _producer(self) -> Producer:
        async with self._producer_lock:
            if self.producer is None:
                settings = self.settings
                self.producer = await anyio.to_thread.run_sync(
                    lambda: Producer(settings, client_id="decisions-api")
                )
            return self.producer


def get_api(request: Request) -> ApiState:
    return cast(ApiState, request.app.state.api)
