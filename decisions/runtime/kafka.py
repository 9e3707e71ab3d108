"""Our wrappers around kafka-python; the rest of the code never touches the raw clients."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import (
    CommitFailedError,
    InvalidReplicationFactorError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
)
from kafka.partitioner.default import DefaultPartitioner, murmur2
from kafka.structs import OffsetAndMetadata, TopicPartition

from decisions.core import metrics, transport
from decisions.core.errors import ConfigError, ServiceUnavailable
from decisions.core.settings import Settings

log = logging.getLogger(__name__)
KAFKA_SETTING = "DECISIONS_KAFKA_BOOTSTRAP"
# The rest of the code names kafka-python's types only through these (this module is the
# one that imports kafka-python; tests/test_layers.py checks it):
BrokerError = KafkaError  # any failure of the Kafka client: an outage to retry
Partition = TopicPartition  # (topic, partition), the key of committed offsets


def _unavailable(settings: Settings, exc: BaseException) -> ServiceUnavailable:
    return ServiceUnavailable(
        "Kafka", str(settings.kafka_bootstrap), KAFKA_SETTING, type(exc).__name__
    )


def check_reachable(settings: Settings, timeout: float = 2.0) -> None:
    """Fail fast, in one line, when no bootstrap server accepts a TCP connection."""
    import socket

    servers = str(settings.kafka_bootstrap or "").split(",")
    for server in servers:
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
                return
        except (OSError, ValueError):
            continue
    raise ServiceUnavailable("Kafka", str(settings.kafka_bootstrap), KAFKA_SETTING,
                             "connection refused")


def ensure_topics(settings: Settings, topics: Sequence[str] | None = None) -> None:
    """Create missing topics with ``settings.topic_partitions`` partitions and
    ``settings.topic_replication_factor`` replicas."""
    wanted = list(topics or (settings.events_topic, settings.actions_topic,
                             settings.dead_letter_topic))
    check_reachable(settings)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap, client_id="decisions-admin",
            request_timeout_ms=10000, **transport.kafka_options(settings),
        )
    except (KafkaError, OSError) as exc:
        raise _unavailable(settings, exc) from None
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            try:
                admin.create_topics(
                    [NewTopic(t, num_partitions=settings.topic_partitions,
                              replication_factor=settings.topic_replication_factor)
                     for t in missing]
                )
            except TopicAlreadyExistsError:
                pass
            except InvalidReplicationFactorError as exc:
                raise ConfigError(
                    f"Kafka refused to create {', '.join(missing)} with "
                    f"DECISIONS_TOPIC_REPLICATION_FACTOR={settings.topic_replication_factor} "
                    f"({exc}); set it to at most the number of brokers") from None
    finally:
        admin.close()


class KeyHashCache(DefaultPartitioner):
    """kafka-python's default partitioner (murmur2 of the key, as the Java client: the same
    partition for the same key) with each key's hash remembered. Records are keyed by user
    id and a user's records come in runs; kafka-python's murmur2 is pure Python (a few µs
    a key, ~1 % of the worker's Python). Keys without a value go to the default."""

    MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}

    def partition(self, topic: str, key: Any, serialized_key: bytes | None, value: Any,
                  serialized_value: Any, cluster: Any) -> int:
        partitions = cluster.partitions_for_topic(topic) if serialized_key is not None \
            else None
        if not partitions:
            return super().partition(topic, key, serialized_key, value, serialized_value,
                                     cluster)
        assert serialized_key is not None
        hashed = self._hashes.get(serialized_key)
        if hashed is None:
            if len(self._hashes) >= self.MAX_KEYS:
                self._hashes.clear()
            hashed = self._hashes[serialized_key] = murmur2(serialized_key) & 0x7FFFFFFF
        ordered = sorted(partitions)
        return int(ordered[hashed % len(ordered)])


class Producer:
    """JSON records keyed by user id; ``send_many`` returns only once the broker acked.

    Recovers from a broken client: kafka-python's idempotent producer goes into a fatal
    state it never leaves (after a broker restart: ``InitProducerIdResponse
    UnknownError``), and then fails every send. Any failed send marks the client broken;
    the next use builds a new one (``send_many`` retries its records once on it at once).
    ``flush`` checks every ``send`` since the last flush and raises
    :class:`ServiceUnavailable` if one failed, so a caller (the worker) keeps the batch
    uncommitted and replays it: nothing is lost, and deterministic ids make the replay
    write the same records rather than new ones.
    """

    def __init__(self, settings: Settings, *, linger_ms: int = 2, client_id: str = "decisions"):
        self.settings = settings
        self._options: dict[str, Any] = {
            "bootstrap_servers": settings.kafka_bootstrap, "client_id": client_id,
            "acks": "all", "linger_ms": linger_ms, "retries": 3, "max_block_ms": 5000,
            "request_timeout_ms": 10000, "partitioner": KeyHashCache(),
            **transport.kafka_options(settings),
        }
        self._lock = threading.Lock()
        self._pending: list[Any] = []  # futures of ``send`` not checked by ``flush`` yet
        self.broken: str | None = None  # why the client must be rebuilt before its next use
        self.rebuilds = 0
        check_reachable(settings)
        self._producer: KafkaProducer | None = self._build()

    def _build(self) -> KafkaProducer:
        try:
            return KafkaProducer(**self._options)
        except (KafkaError, OSError) as exc:
            raise _unavailable(self.settings, exc) from None

    def _fatal(self) -> bool:
        # kafka-python keeps the idempotence state in a private attribute
        manager = getattr(self._producer, "_transaction_manager", None)
        return manager is not None and bool(manager.has_fatal_error())

    def problem(self) -> str | None:
        """Why the current client cannot send (None: it can, as far as is known)."""
        if self.broken is None and self._fatal():
            self.broken = "fatal producer error"
        return self.broken

    def _client(self) -> KafkaProducer:
        with self._lock:
            if self._producer is not None and self.problem() is None:
                return self._producer
            old, self._producer = self._producer, None
            if old is not None:
                log.warning("Kafka producer broken (%s); building a new one", self.broken)
                try:
                    old.close(timeout=0)  # its unsent records fail; their senders retry
                except Exception:  # a broken client may not even close
                    log.debug("closing the broken producer failed", exc_info=True)
            self._producer = self._build()
            self.broken = None
            self.rebuilds += 1
            return self._producer

    def recover(self) -> str | None:
        """Build a new client if this one is broken (``/readyz`` calls it, so a producer
        broken while no request came is repaired before the next). Returns the problem
        it repaired; raises ServiceUnavailable when the new client cannot be built."""
        problem = self.problem() if self._producer is not None else "no client"
        if problem is not None:
            self._client()
        return problem

    def _mark(self, why: str) -> None:
        self.broken = self.broken or why

    def _send(self, topic: str, key: str | None, value: Any,
              headers: list[tuple[str, bytes]] | None) -> Any:
        data = value if isinstance(value, bytes) else orjson.dumps(value)
        try:
            return self._client().send(
                topic, key=key.encode() if key is not None else None, value=data,
                headers=headers,
            )
        except KafkaError as exc:
            self._mark(f"send failed: {type(exc).__name__}")
            raise _unavailable(self.settings, exc) from None

    def send(self, topic: str, key: str | None, value: Any,
             headers: list[tuple[str, bytes]] | None = None) -> Any:
        """Hand a record to the client; the next ``flush`` says whether it arrived."""
        future = self._send(topic, key, value, headers)
        with self._lock:
            self._pending.append(future)
        return future

    def send_many(
        self, topic: str, records: Iterable[tuple[str | None, Any]], timeout: float = 10.0,
        headers: Callable[[bytes], list[tuple[str, bytes]]] | None = None,
    ) -> int:
        """Send and wait for every acknowledgement. ``headers``: of each record, from its
        value bytes. When the broker refused them (not a timeout: e.g. a producer id it
        forgot in a restart), the client is rebuilt and the records sent once more on the
        new one; a second failure, or a timeout, raises ServiceUnavailable."""
        encoded = [(key, value if isinstance(value, bytes) else orjson.dumps(value))
                   for key, value in records]
        for attempt in (1, 2):
            try:
                return self._send_all(topic, encoded, timeout, headers)
            except KafkaError as exc:
                self._mark(f"send failed: {type(exc).__name__}: {exc}")
                if attempt == 2 or isinstance(exc, KafkaTimeoutError):
                    raise _unavailable(self.settings, exc) from None
                log.warning("Kafka refused a send (%s: %s); sending again on a new producer",
                            type(exc).__name__, exc)
        raise AssertionError("unreachable")

    def _send_all(self, topic: str, records: list[tuple[str | None, bytes]], timeout: float,
                  headers: Callable[[bytes], list[tuple[str, bytes]]] | None) -> int:
        client = self._client()
        futures = [client.send(topic, key=key.encode() if key is not None else None,
                               value=value, headers=headers(value) if headers else None)
                   for key, value in records]
        client.flush(timeout=timeout)  # do not wait out linger_ms
        for fut in futures:
            fut.get(timeout=timeout)
        return len(futures)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait for every record handed to ``send`` so far; raise ServiceUnavailable if
        one of them was not acknowledged (the caller must not count it as published)."""
        with self._lock:
            pending, self._pending = self._pending, []
        client = self._producer
        try:
            if client is not None:
                client.flush(timeout=timeout)
        except KafkaError as exc:
            self._mark(f"flush failed: {type(exc).__name__}")
            raise _unavailable(self.settings, exc) from None
        for fut in pending:
            if not fut.is_done:  # sent on a client replaced meanwhile: not known to be acked
                self._mark("a record was left unsent")
                raise ServiceUnavailable("Kafka", str(self.settings.kafka_bootstrap),
                                         KAFKA_SETTING, "a record was not acknowledged")
            if fut.failed():
                error = fut.exception
                self._mark(f"send failed: {type(error).__name__}: {error}")
                raise ServiceUnavailable("Kafka", str(self.settings.kafka_bootstrap),
                                         KAFKA_SETTING, f"send failed: {type(error).__name__}")

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)


def _commit_done(offsets: Any, response: Any) -> None:
    if isinstance(response, Exception):
        log.info("asynchronous offset commit failed (%s); a later commit supersedes it",
                 response)


class GroupRebalanced(Exception):
    """A commit was refused because the group rebalanced during the batch.

    Nothing is lost: the commit is the batch's last step (its effects are stored), and a
    partition's new owner replays from the last committed offset, dropping what is done."""


class _Listener(ConsumerRebalanceListener):
    def __init__(self, owner: Consumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: Any) -> None:
        log.info("partitions revoked: %s", _names(revoked))
        metrics.ASSIGNED.set(0)
        metrics.PARTITION_LAG.clear()  # a partition's new owner reports its lag

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.owner.generation += 1
        metrics.ASSIGNED.set(len(assigned))
        metrics.REBALANCES.inc()
        log.info("partitions assigned: %s", _names(assigned))


def _names(parts: Iterable[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}/{tp.partition}" for tp in sorted(parts)) or "(none)"


class Consumer:
    """A consumer-group member with manual commits (offsets only after effects are stored).

    In-flight work is bounded: one poll returns at most ``batch_size`` records, and the
    fetcher buffers at most ``worker_fetch_max_bytes`` ahead of processing. kafka-python
    fetches only inside ``poll``, so while a batch is processed (or retried, paused)
    nothing more is read: a slow Redis or broker slows consumption, memory stays flat.
    """

    def __init__(self, settings: Settings, topics: Sequence[str], **overrides: Any) -> None:
        self.settings = settings
        self.generation = 0  # bumped on every assignment (tests and logs)
        fetch_max = max(64 * 1024, settings.worker_fetch_max_bytes)
        options: dict[str, Any] = {
            "bootstrap_servers": settings.kafka_bootstrap,
            "group_id": settings.group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "session_timeout_ms": settings.session_timeout_ms,
            "heartbeat_interval_ms": settings.heartbeat_interval_ms,
            "max_poll_records": settings.batch_size,
            "fetch_max_wait_ms": settings.worker_fetch_max_wait_ms,
            "fetch_max_bytes": fetch_max,
            "max_partition_fetch_bytes": max(settings.max_event_bytes + 1024, fetch_max // 4),
            "client_id": "decisions-worker",
            **transport.kafka_options(settings),
        }
        options.update(overrides)
        check_reachable(settings)
        try:
            self._consumer = KafkaConsumer(**options)
            self._consumer.subscribe(list(topics), listener=_Listener(self))
        except (KafkaError, OSError) as exc:
            raise _unavailable(settings, exc) from None

    def poll(self, timeout_ms: int) -> list[Any]:
        batches = self._consumer.poll(timeout_ms=timeout_ms)
        records: list[Any] = []
        for part_records in batches.values():
            records.extend(part_records)
        return records

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            self._consumer.commit(
                {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}
            )
        except CommitFailedError as exc:
            raise GroupRebalanced(str(exc)) from None

    def commit_async(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit without waiting for the coordinator: requests go out in order, so a
        later commit supersedes an earlier one; a failure (e.g. the group moved on) is
        logged, and the partitions' next owner replays from the last commit that held."""
        self._consumer.commit_async(
            {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()},
            callback=_commit_done,
        )

    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment())

    def paused(self) -> set[TopicPartition]:
        return set(self._consumer.paused())

    def pause(self) -> None:
        self._consumer.pause(*self._consumer.assignment())

    def resume(self) -> None:
        self._consumer.resume(*self._consumer.paused())

    def seek_to_committed(self) -> None:
        """After a failed batch: rewind every assigned partition to its committed offset."""
        for tp in self._consumer.assignment():
            committed = self._consumer.committed(tp)
            if committed is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed)

    def lag(self) -> int:
        """Records behind the end of the assigned partitions, from the high-water marks the
        last fetches reported (no broker round trip: the consumer's thread must not wait).
        Partitions not fetched yet count 0. Each partition's lag is also set on
        ``decisions_consumer_partition_lag{topic,partition}`` (the dashboard's per-partition
        panel: one hot or stuck partition hides in the total)."""
        total = 0
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            if end is None:
                continue
            position = self._consumer.position(tp)  # known once fetched: no round trip
            behind = max(0, end - (position if position is not None else end))
            metrics.PARTITION_LAG.labels(tp.topic, str(tp.partition)).set(behind)
            total += behind
        return total

    def close(self) -> None:
        self._consumer.close(autocommit=False)
