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

On a Redis Cluster (the client is a redis-py ``RedisCluster``, see
``decisions.core.resp.cluster``) each command goes to the node that owns its key's slot:
the commands of one node go in one write, every node's write goes out before any reply is
read. A ``MOVED`` reply (slots moved, a replica took over) refreshes the slot map and
re-sends those commands; ``ASK`` sends them once to the importing node; ``CLUSTERDOWN`` /
``TRYAGAIN`` raise ``redis.ConnectionError``, a passing outage. ``MGET`` over keys of
several slots is sent as one ``GET`` per key and answered as one list.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable, Sequence
from typing import Any, cast

import hiredis
import redis

from decisions.core.resp import cluster as _cluster

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
    __slots__ = ("client", "_parts", "_scripts", "_slots", "_gathers")

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._parts: list[bytes] = []
        self._scripts: list[tuple[RawScript, bytes] | None] = []
        # on a cluster: each part's slot, and the MGETs sent as GETs (first part, count)
        self._slots: list[int | None] | None = [] if _cluster.is_cluster_client(client) \
            else None
        self._gathers: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return len(self._parts)

    def command(self, *args: EncodableArg) -> None:
        slots = self._slots
        if slots is not None:
            if args[0] == "MGET" and len(args) > 2:
                self._gathers.append((len(self._parts), len(args) - 1))
                for key in args[1:]:
                    self._parts.append(_pack(("GET", key)))
                    self._scripts.append(None)
                    slots.append(_cluster.slot(_key(key)))
                return
            slots.append(_cluster.command_slot(args))
        self._parts.append(_pack(args))
        self._scripts.append(None)

    def script(self, script: RawScript, keys: Sequence[EncodableArg],
               args: Sequence[EncodableArg]) -> None:
        packed = _pack(("EVALSHA", script.sha, len(keys), *keys, *args))
        self._parts.append(packed)
        self._scripts.append((script, packed))
        if self._slots is not None:
            self._slots.append(_cluster.slot(_key(keys[0])) if keys else None)

    def execute(self) -> list[Any]:
        """Send everything queued, return the replies in order (and empty the pipeline)."""
        parts, scripts = self._parts, self._scripts
        self._parts, self._scripts = [], []
        if not parts:
            return []
        slots = self._slots
        if slots is not None:
            self._slots, gathers, self._gathers = [], self._gathers, []
            return _gather(self._execute_cluster(parts, scripts, slots), gathers)
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

    def _execute_cluster(self, parts: list[bytes], scripts: list[tuple[RawScript, bytes] | None],
                         slots: list[int | None]) -> list[Any]:
        cluster = cast(redis.RedisCluster, self.client)
        replies = cluster_roundtrip(cluster, list(zip(slots, parts, strict=True)))
        failed = [i for i, reply in enumerate(replies)
                  if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT")
                  and scripts[i] is not None]
        if failed:  # load on the node of each failed call, then call again
            retry: list[tuple[int | None, bytes]] = []
            for i in failed:
                entry = scripts[i]
                assert entry is not None
                retry.append((slots[i], _pack(("SCRIPT", "LOAD", entry[0].body))))
                retry.append((slots[i], entry[1]))
            again = cluster_roundtrip(cluster, retry)
            for n, i in enumerate(failed):
                replies[i] = again[2 * n + 1]
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise redis.ResponseError(str(reply))
        return replies


def _key(value: EncodableArg) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _gather(replies: list[Any], gathers: list[tuple[int, int]]) -> list[Any]:
    """Replies of MGETs sent as GETs, back to one list each."""
    for start, count in reversed(gathers):
        replies[start:start + count] = [replies[start:start + count]]
    return replies


def cluster_roundtrip(cluster: redis.RedisCluster,
                      items: list[tuple[int | None, bytes]]) -> list[Any]:
    """Packed commands, each with its key's slot (None: any node), sent to the nodes that
    own them; the replies in the order of ``items``. Redirections are followed here."""
    replies: list[Any] = [None] * len(items)
    todo = list(range(len(items)))
    asking: dict[int, str] = {}
    for _attempt in range(5):
        groups: dict[str, list[int]] = {}
        for i in todo:
            name = asking.get(i) or _node_name(cluster, items[i][0])
            groups.setdefault(name, []).append(i)
        sent: list[tuple[redis.Redis, Any, list[int]]] = []
        read = 0
        try:
            for name, members in groups.items():
                node = cluster.get_node(node_name=name)
                if node is None:
                    raise redis.ConnectionError(f"Redis Cluster node {name} unknown")
                client = cluster.get_redis_connection(node)
                payload = [(b"*1\r\n$6\r\nASKING\r\n" + items[i][1]) if i in asking
                           else items[i][1] for i in members]
                sent.append((client, _send(client, payload), members))
            for client, conn, members in sent:
                want = len(members) + sum(1 for i in members if i in asking)
                got = _read(client, conn, want)
                read += 1
                if asking:
                    got = [r for r, i in zip(got, _expand(members, asking), strict=True)
                           if i >= 0]
                for i, reply in zip(members, got, strict=True):
                    replies[i] = reply
        except redis.ConnectionError:
            _refresh(cluster)  # a node is away: maybe a replica took over
            raise
        finally:
            for n, (client, conn, _) in enumerate(sent):
                if n >= read:  # its replies are unread: they would confuse the next user
                    conn.disconnect()
                client.connection_pool.release(conn)
        todo, asking = [], {}
        moved = False
        for i, reply in enumerate(replies):
            if not isinstance(reply, hiredis.ReplyError):
                continue
            text = str(reply)
            if text.startswith("MOVED "):
                moved = True
                todo.append(i)
            elif text.startswith("ASK "):
                asking[i] = text.split()[2]
                todo.append(i)
            elif text.startswith(("CLUSTERDOWN", "TRYAGAIN")):
                raise redis.ConnectionError(f"Redis Cluster: {text}")
        if not todo:
            return replies
        if moved:
            _refresh(cluster)
    raise redis.ConnectionError("Redis Cluster: still redirected after 5 tries "
                                "(slots moving?)")


def _expand(members: list[int], asking: dict[int, str]) -> list[int]:
    out: list[int] = []
    for i in members:
        if i in asking:
            out.append(-1)  # ASKING's +OK
        out.append(i)
    return out


def _node_name(cluster: redis.RedisCluster, slot: int | None) -> str:
    if slot is None:
        return str(cluster.get_default_node().name)
    return str(cluster.nodes_manager.get_node_from_slot(slot).name)


def _refresh(cluster: redis.RedisCluster) -> None:
    try:
        cluster.nodes_manager.initialize()
    except redis.RedisError:  # the next call tries again
        pass


def _send(client: redis.Redis, parts: list[bytes]) -> Any:
    """Write packed commands on a pooled connection (returned: read it with ``_read``)."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([b"".join(parts)], check_health=False)
    except TimeoutError as exc:
        conn.disconnect()
        pool.release(conn)
        raise redis.TimeoutError(f"Redis timed out: {exc}") from exc
    except OSError as exc:
        conn.disconnect()
        pool.release(conn)
        raise redis.ConnectionError(f"Redis connection failed: {exc}") from exc
    except BaseException:
        conn.disconnect()
        pool.release(conn)
        raise
    return conn


def _read(client: redis.Redis, conn: Any, want: int) -> list[Any]:
    """Read ``want`` replies from a connection of ``_send`` (released by the caller... or
    here on failure, after closing it)."""
    try:
        return _read_replies(conn, want)
    except TimeoutError as exc:
        conn.disconnect()
        raise redis.TimeoutError(f"Redis timed out: {exc}") from exc
    except (OSError, hiredis.ProtocolError) as exc:
        conn.disconnect()
        raise redis.ConnectionError(f"Redis connection failed: {exc}") from exc
    except BaseException:
        conn.disconnect()
        raise


def _read_replies(conn: Any, want: int) -> list[Any]:
    sock: socket.socket | None = conn._sock  # read with our own hiredis reader
    if sock is None:
        raise redis.ConnectionError("Redis connection closed")
    reader = hiredis.Reader()
    out: list[Any] = []
    buf = bytearray(65536)
    while len(out) < want:
        n: int = sock.recv_into(buf)
        if not n:
            raise redis.ConnectionError("Redis closed the connection")
        reader.feed(buf, 0, n)  # type: ignore[arg-type]  # hiredis reads any buffer
        reply = reader.gets()
        while reply is not False:
            out.append(reply)
            reply = reader.gets()
    return out


def roundtrip(client: redis.Redis, parts: list[bytes]) -> list[Any]:
    """Write packed commands on one pooled connection and read as many replies."""
    conn = _send(client, parts)
    try:
        return _read(client, conn, len(parts))
    finally:
        client.connection_pool.release(conn)


__all__ = ["RawPipeline", "RawScript", "roundtrip"]
