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
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis


class RespError(Exception):
    """Redis answered with an error reply (e.g. NOSCRIPT, WRONGTYPE)."""


def pack(args: tuple[Any, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


@dataclass
class _Waiter:
    future: asyncio.Future[list[Any]]
    count: int
    sent_at: float
    replies: list[Any] = field(default_factory=list)


class _Protocol(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.reader = hiredis.Reader()
        self.pending: deque[_Waiter] = deque()
        self.transport: asyncio.Transport | None = None
        self.buffer: list[bytes] = []
        self.flush_scheduled = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while True:
                reply = self.reader.gets()
                if reply is False:
                    return
                waiter = self.pending[0]
                waiter.replies.append(reply)
                if len(waiter.replies) == waiter.count:
                    self.pending.popleft()
                    if not waiter.future.done():
                        waiter.future.set_result(waiter.replies)
        except (hiredis.ProtocolError, IndexError) as exc:
            self.abort(ConnectionError(f"Redis protocol error: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionError("connection to Redis lost"))

    def send(self, payload: bytes, count: int) -> asyncio.Future[list[Any]]:
        future: asyncio.Future[list[Any]] = self.loop.create_future()
        if self.closed:
            future.set_exception(ConnectionError("connection to Redis closed"))
            return future
        self.pending.append(_Waiter(future, count, self.loop.time()))
        self.buffer.append(payload)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)
        return future

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.buffer and self.transport is not None and not self.closed:
            self.transport.write(b"".join(self.buffer))
        self.buffer.clear()

    def fail(self, exc: Exception) -> None:
        self.closed = True
        while self.pending:
            waiter = self.pending.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(exc)

    def abort(self, exc: Exception) -> None:
        self.fail(exc)
        if self.transport is not None:
            self.transport.abort()


class FastRedis:
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
        self.timeout = timeout
        self.dead_after = max(1.0, 10 * timeout)
        self._slots: list[_Protocol | None] = [None] * max(1, connections)
        self._connecting: list[asyncio.Future[_Protocol] | None] = [None] * len(self._slots)
        self._next = 0

    async def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Run commands in one round trip; an error reply raises RespError."""
        return await self.pipeline_packed(b"".join(pack(c) for c in commands), len(commands))

    async def pipeline_packed(self, payload: bytes, count: int) -> list[Any]:
        """``count`` commands already packed with :func:`pack`."""
        replies = await self._call(payload, count)
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise RespError(str(reply))
        return replies

    async def execute(self, *args: Any) -> Any:
        return (await self.pipeline([args]))[0]

    async def _call(self, payload: bytes, count: int) -> list[Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        index = self._next = (self._next + 1) % len(self._slots)
        proto = self._slots[index]
        if proto is None or proto.closed:
            proto = await self._connection(index, deadline)
        future = proto.send(payload, count)
        handle = loop.call_at(deadline, _deadline, loop, future)
        try:
            return await future
        except TimeoutError:
            # The late reply will still come, in order, and be dropped. Only a connection
            # that has answered nothing for a long while is given up (a hung server or a
            # dead network path): its pending calls fail and the next call reconnects.
            oldest = proto.pending[0].sent_at if proto.pending else loop.time()
            if loop.time() - oldest > self.dead_after:
                proto.abort(TimeoutError("Redis stopped answering"))
            raise
        finally:
            handle.cancel()

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
        proto = _Protocol(loop)
        if self.scheme == "unix":
            await loop.create_unix_connection(lambda: proto, self.path)
        else:
            context = ssl.create_default_context() if self.scheme == "rediss" else None
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


def _deadline(loop: asyncio.AbstractEventLoop, future: asyncio.Future[list[Any]]) -> None:
    """The deadline passed: give the socket one more look before calling it a timeout.

    A busy event loop can run a due timer before the read callback of a reply that came
    in time (libuv runs timers first). Two hops through ``call_soon`` put one I/O poll
    between the deadline and the verdict, so only a reply that really is late counts.
    """
    if not future.done():
        loop.call_soon(loop.call_soon, _expire, future)


def _expire(future: asyncio.Future[list[Any]]) -> None:
    if not future.done():
        future.set_exception(TimeoutError("Redis did not answer in time"))


def _retrieve(future: asyncio.Future[_Protocol]) -> None:
    """Mark a failed connect as seen (a waiter may have given up on it already)."""
    if not future.cancelled():
        future.exception()
