"""A small multiplexed, auto-pipelining Redis client for the API's hot read path.

Why not redis-py here: each redis-py asyncio call takes a pooled connection and a socket
write and read of its own. The API instead keeps a few connections, and every command
written during one event-loop iteration — by any number of concurrent requests — goes out
in one socket write; replies come back in order and are parsed by hiredis. Under load the
cost of talking to Redis is shared by every request in flight.

Only what the read path needs: commands in, RESP2 replies out, a timeout per call, no
retries (a failure is the caller's cue to serve fallback content). Admin paths (erasure,
export) use redis-py.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Awaitable
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis

from decisions.core.transport import redis_tls


class RespError(Exception):
    """Redis answered with an error reply (e.g. NOSCRIPT, WRONGTYPE)."""


def pack(args: tuple[Any, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Waiter:
    """One call: ``count`` replies expected, answered by ``deadline`` (loop time)."""

    __slots__ = ("count", "deadline", "future", "replies")

    def __init__(self, future: asyncio.Future[list[Any]], count: int, deadline: float) -> None:
        self.future = future
        self.count = count
        self.deadline = deadline
        self.replies: list[Any] = []


class _Protocol(asyncio.Protocol):
    """One connection: calls in flight in send order, replies matched to them in order.

    Deadlines: one timer per connection, armed at the oldest unanswered call's deadline (not
    one per call). When it fires, every call past its deadline fails with TimeoutError; its
    late reply still comes, in order, and is dropped.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float = 1.0,
                 dead_after: float = 10.0) -> None:
        self.loop = loop
        self.timeout = timeout
        self.dead_after = dead_after
        self.reader = hiredis.Reader()
        self.pending: deque[_Waiter] = deque()
        self.transport: asyncio.Transport | None = None
        self.buffer: list[bytes] = []
        self.flush_scheduled = False
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.sweeping = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        pending = self.pending
        reader.feed(data)
        try:
            reply = reader.gets()
            while reply is not False:
                waiter = pending[0]
                replies = waiter.replies
                replies.append(reply)
                if len(replies) == waiter.count:
                    pending.popleft()
                    if not waiter.future.done():
                        waiter.future.set_result(replies)
                reply = reader.gets()
        except (hiredis.ProtocolError, IndexError) as exc:
            self.abort(ConnectionError(f"Redis protocol error: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionError("connection to Redis lost"))

    def send(self, payload: bytes, count: int,
             deadline: float | None = None) -> asyncio.Future[list[Any]]:
        """``count`` packed commands; the future fails with TimeoutError past the deadline
        (loop time; by default ``timeout`` from now)."""
        loop = self.loop
        future: asyncio.Future[list[Any]] = loop.create_future()
        if self.closed:
            future.set_exception(ConnectionError("connection to Redis closed"))
            return future
        waiter = _Waiter(future, count,
                         loop.time() + self.timeout if deadline is None else deadline)
        self.pending.append(waiter)
        self.buffer.append(payload)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            loop.call_soon(self.flush)
        if not self.sweeping and (self.timer is None or waiter.deadline < self.timer_at):
            self._arm(waiter.deadline)
        return future

    def _arm(self, when: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_at(when, self._deadline)
        self.timer_at = when

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.buffer and self.transport is not None and not self.closed:
            self.transport.write(b"".join(self.buffer))
        self.buffer.clear()

    def _deadline(self) -> None:
        """The oldest call's deadline passed: give the socket one more look first.

        A busy event loop can run a due timer before the read callback of a reply that
        came in time (libuv runs timers first). Two hops through ``call_soon`` put one I/O
        poll between the deadline and the verdict, so only a reply that really is late
        counts.
        """
        self.timer = None
        self.sweeping = True
        self.loop.call_soon(self.loop.call_soon, self._sweep)

    def _sweep(self) -> None:
        self.sweeping = False
        if self.closed:
            return
        now = self.loop.time()
        for waiter in self.pending:
            if waiter.future.done():
                continue
            if waiter.deadline > now:
                self._arm(waiter.deadline)
                break
            waiter.future.set_exception(TimeoutError("Redis did not answer in time"))
        # Only a connection that has answered nothing for a long while is given up (a hung
        # server or a dead network path): its calls fail and the next call reconnects.
        if self.pending and now - (self.pending[0].deadline - self.timeout) > self.dead_after:
            self.abort(TimeoutError("Redis stopped answering"))

    def fail(self, exc: Exception) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        while self.pending:
            waiter = self.pending.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(exc)

    def abort(self, exc: Exception) -> None:
        self.fail(exc)
        if self.transport is not None:
            self.transport.abort()


class Calls:
    """``pipeline``, ``pipeline_packed`` and ``execute`` on top of a client's ``request``
    (the raw replies of packed commands): shared by ``FastRedis`` and ``ClusterFastRedis``."""

    def request(self, payload: bytes, count: int) -> Awaitable[list[Any]]:
        raise NotImplementedError

    async def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Run commands in one round trip; an error reply raises RespError."""
        return await self.pipeline_packed(b"".join(pack(c) for c in commands), len(commands))

    async def pipeline_packed(self, payload: bytes, count: int) -> list[Any]:
        """``count`` commands already packed with :func:`pack`."""
        replies = await self.request(payload, count)
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise RespError(str(reply))
        return replies

    async def execute(self, *args: Any) -> Any:
        return (await self.pipeline([args]))[0]


class FastRedis(Calls):
    """``await client.pipeline([("GET", k), ("HVALS", h)])`` → the replies, in order.

    One connection by default: Redis runs commands one at a time anyway, and one
    connection means one socket write per event-loop iteration for every request in flight.
    """

    def __init__(self, url: str, *, timeout: float, connections: int = 1) -> None:
        parts = urlsplit(url)
        self.scheme = parts.scheme
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.path = unquote(parts.path) if parts.scheme == "unix" else ""
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        db = parts.path.strip("/") if parts.scheme != "unix" else ""
        self.db = int(db) if db.isdigit() else 0
        self.tls = redis_tls(url)
        self.timeout = timeout
        self.dead_after = max(1.0, 10 * timeout)
        self._slots: list[_Protocol | None] = [None] * max(1, connections)
        self._connecting: list[asyncio.Future[_Protocol] | None] = [None] * len(self._slots)
        self._next = 0

    def request(self, payload: bytes, count: int) -> Awaitable[list[Any]]:
        """The raw replies of ``count`` packed commands (error replies included), awaitable.

        On a live connection this is the reply future itself: no coroutine, no timer of its
        own (the connection keeps one deadline timer for all its calls).
        """
        index = self._next = (self._next + 1) % len(self._slots)
        proto = self._slots[index]
        if proto is not None and not proto.closed:
            return proto.send(payload, count)
        return self._connect_and_send(index, payload, count)

    async def _connect_and_send(self, index: int, payload: bytes, count: int) -> list[Any]:
        deadline = asyncio.get_running_loop().time() + self.timeout
        proto = await self._connection(index, deadline)
        return await proto.send(payload, count, deadline)

    async def _connection(self, index: int, deadline: float) -> _Protocol:
        connecting = self._connecting[index]
        if connecting is not None and connecting.done() and not connecting.cancelled() \
                and connecting.exception() is None and not connecting.result().closed:
            proto = self._slots[index] = connecting.result()
            return proto
        if connecting is None or connecting.done():
            connecting = asyncio.ensure_future(self._connect())
            connecting.add_done_callback(_retrieve)
            self._connecting[index] = connecting
        loop = asyncio.get_running_loop()
        try:
            proto = await asyncio.wait_for(asyncio.shield(connecting),
                                           max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise TimeoutError("Redis connect timed out") from None
        self._slots[index] = proto
        return proto

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        proto = _Protocol(loop, self.timeout, self.dead_after)
        if self.scheme == "unix":
            await loop.create_unix_connection(lambda: proto, self.path)
        else:
            context = None
            if self.scheme == "rediss":  # CA and client certificate: DECISIONS_REDIS_TLS_*
                tls = self.tls
                context = ssl.create_default_context(cafile=tls.get("ssl_ca_certs") or None)
                if tls.get("ssl_certfile"):
                    context.load_cert_chain(tls["ssl_certfile"], tls.get("ssl_keyfile") or None)
            await loop.create_connection(lambda: proto, self.host, self.port, ssl=context)
        setup: list[tuple[Any, ...]] = []
        if self.password is not None:
            setup.append(("AUTH", self.username, self.password) if self.username
                         else ("AUTH", self.password))
        if self.db:
            setup.append(("SELECT", self.db))
        if setup:
            replies = await proto.send(b"".join(pack(c) for c in setup), len(setup))
            bad = [r for r in replies if isinstance(r, hiredis.ReplyError)]
            if bad:
                proto.abort(ConnectionError(str(bad[0])))
                raise ConnectionError(f"Redis refused the connection setup: {bad[0]}")
        return proto

    async def close(self) -> None:
        for index, proto in enumerate(self._slots):
            if proto is not None:
                proto.closed = True
                if proto.transport is not None:
                    proto.transport.close()
            self._slots[index] = None
        for connecting in self._connecting:
            if connecting is not None and not connecting.done():
                connecting.cancel()


def _retrieve(future: asyncio.Future[_Protocol]) -> None:
    """Mark a failed connect as seen (a waiter may have given up on it already)."""
    if not future.cancelled():
        future.exception()
