"""A lean Redis pipeline for the worker's hot path.

redis-py spends about 18 µs of Python per command in a pipeline (argument checks,
observability hooks, per-reply callbacks); the worker sends three to four commands per
event. :class:`RawPipeline` packs commands with hiredis (C), sends them in one write on
a connection borrowed from the client's pool (so connecting, AUTH, SELECT and TLS stay
redis-py's), and reads the replies with a hiredis reader: about 2 µs per command.
Replies are raw (bytes, ints, lists of them); error replies raise ``redis.ResponseError``
once every reply is read, and socket failures raise ``redis.ConnectionError`` or
``redis.TimeoutError``, as redis-py would, so the worker's retry logic is unchanged.

Scripts run by ``EVALSHA``. Redis answers ``NOSCRIPT`` after a restart or a ``SCRIPT
FLUSH``; such a call did not run, so its script is loaded and the failed calls are sent
again, in their original order. (Commands after it in the same pipeline did run first:
in the worker's pipelines those are writes to other keys, or further calls of the same
script, which failed too and are re-sent in order.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, cast

import hiredis
import redis

EncodableArg = str | bytes | int | float
# hiredis' stubs type the argument as a one-element tuple
_pack = cast(Callable[[tuple[Any, ...]], bytes], hiredis.pack_command)


class RawScript:
    """A Lua script run by SHA1; loaded on first NOSCRIPT."""

    __slots__ = ("body", "sha")

    def __init__(self, body: str) -> None:
        self.body = body
        self.sha = hashlib.sha1(body.encode()).hexdigest()  # noqa: S324 - Redis' script id


class RawPipeline:
    __slots__ = ("client", "_parts", "_scripts")

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._parts: list[bytes] = []
        self._scripts: list[tuple[RawScript, bytes] | None] = []

    def __len__(self) -> int:
        return len(self._parts)

    def command(self, *args: EncodableArg) -> None:
        self._parts.append(_pack(args))
        self._scripts.append(None)

    def script(self, script: RawScript, keys: Sequence[EncodableArg],
               args: Sequence[EncodableArg]) -> None:
        packed = _pack(("EVALSHA", script.sha, len(keys), *keys, *args))
        self._parts.append(packed)
        self._scripts.append((script, packed))

    def execute(self) -> list[Any]:
        """Send everything queued, return the replies in order (and empty the pipeline)."""
        parts, scripts = self._parts, self._scripts
        self._parts, self._scripts = [], []
        if not parts:
            return []
        replies = roundtrip(self.client, parts)
        failed = [i for i, reply in enumerate(replies)
                  if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT")
                  and scripts[i] is not None]
        if failed:
            bodies = {}
            for i in failed:
                entry = scripts[i]
                assert entry is not None
                bodies[entry[0].sha] = entry[0].body
            retry = [_pack(("SCRIPT", "LOAD", body)) for body in bodies.values()]
            for i in failed:
                entry = scripts[i]
                assert entry is not None
                retry.append(entry[1])
            again = roundtrip(self.client, retry)[len(bodies):]
            for i, reply in zip(failed, again, strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise redis.ResponseError(str(reply))
        return replies


def roundtrip(client: redis.Redis, parts: list[bytes]) -> list[Any]:
    """Write packed commands on one pooled connection and read as many replies."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([b"".join(parts)], check_health=False)
        sock = conn._sock  # read with our own hiredis reader
        if sock is None:
            raise redis.ConnectionError("Redis connection closed")
        reader = hiredis.Reader()
        want = len(parts)
        out: list[Any] = []
        buf = bytearray(65536)
        while len(out) < want:
            n = sock.recv_into(buf)
            if not n:
                raise redis.ConnectionError("Redis closed the connection")
            reader.feed(buf, 0, n)
            reply = reader.gets()
            while reply is not False:
                out.append(reply)
                reply = reader.gets()
        return out
    except TimeoutError as exc:  # socket.timeout
        conn.disconnect()
        raise redis.TimeoutError(f"Redis timed out: {exc}") from exc
    except (OSError, hiredis.ProtocolError) as exc:
        conn.disconnect()
        raise redis.ConnectionError(f"Redis connection failed: {exc}") from exc
    except BaseException:
        conn.disconnect()  # the replies left unread would confuse the next user
        raise
    finally:
        pool.release(conn)


__all__ = ["RawPipeline", "RawScript", "roundtrip"]
