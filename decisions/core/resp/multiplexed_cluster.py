"""``FastRedis`` for a Redis Cluster: one multiplexed connection per node, routed by slot.

Same calls as :class:`decisions.core.resp.multiplexed.FastRedis` (``request``,
``pipeline``, ``execute``), so the API's store does not know which one it holds. A
request's packed commands are read back into arguments (hiredis parses a packed command
as the array it is), grouped by the node that owns each command's slot, and sent to every
node at once; the replies come back in the request's order.

- ``SCRIPT ...`` goes to every node (each node has its own script cache), and answers
  with the first node's reply; ``PING`` and other keyless commands go to one node.
- ``MOVED`` (slots moved, a replica took over): the slot map is read again
  (``CLUSTER SLOTS``) and those commands sent once more; ``ASK``: once to the importing
  node, after ``ASKING``.
- A node that cannot be reached fails its commands at once (``ConnectionError``): the
  caller serves fallback; the slot map is read again on the next request, so a failover
  is followed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import hiredis

from decisions.core.resp import cluster
from decisions.core.resp.multiplexed import Calls, FastRedis, RespError, pack

SLOTS = 16384


class ClusterFastRedis(Calls):
    def __init__(self, url: str, *, timeout: float, connections: int = 1,
                 detect: bool = False) -> None:
        """``detect``: the server may be no cluster node (``DECISIONS_REDIS_CLUSTER=auto``);
        then, once the first call has asked it, every call goes straight to its
        ``FastRedis``."""
        self.url = url
        self.detect = detect
        self._single: FastRedis | None = None
        self.timeout = timeout
        self.connections = connections
        self._seeds = [url]
        self._nodes: dict[str, FastRedis] = {}
        self._table: list[FastRedis] = []
        self._refreshing: asyncio.Future[None] | None = None
        self._stale = True

    # -- the slot map ------------------------------------------------------------------

    def _node(self, address: str) -> FastRedis:
        client = self._nodes.get(address)
        if client is None:
            parts = urlsplit(self.url)
            netloc = parts.netloc.rsplit("@", 1)
            auth = netloc[0] + "@" if len(netloc) == 2 else ""
            client = self._nodes[address] = FastRedis(
                urlunsplit(parts._replace(netloc=auth + address, path="")),
                timeout=self.timeout, connections=self.connections)
        return client

    async def refresh(self) -> None:
        """Read the slot map (once at a time; concurrent callers wait for that one)."""
        if self._refreshing is not None and not self._refreshing.done():
            await asyncio.shield(self._refreshing)
            return
        self._refreshing = asyncio.ensure_future(self._read_map())
        await asyncio.shield(self._refreshing)

    async def _read_map(self) -> None:
        known = [*self._seeds, *(self._address_url(a) for a in self._nodes)]
        last: Exception | None = None
        for url in dict.fromkeys(known):
            seed = self._node(self._address(url))
            try:
                reply = (await seed.pipeline([("CLUSTER", "SLOTS")]))[0]
            except RespError as exc:
                if "cluster support disabled" in str(exc) and url == self.url:
                    if self.detect:
                        self._single = seed
                        self._stale = False
                        return
                    raise RespError(f"{exc}: DECISIONS_REDIS_CLUSTER=yes, but this Redis is "
                                    "no cluster") from None
                last = exc
                continue
            except (OSError, TimeoutError) as exc:
                last = exc
                continue
            table: list[FastRedis | None] = [None] * SLOTS
            for entry in reply:
                start, end, primary = int(entry[0]), int(entry[1]), entry[2]
                host = primary[0].decode() if primary[0] else seed.host
                node = self._node(f"{host}:{int(primary[1])}")
                table[start:end + 1] = [node] * (end - start + 1)
            fallback = seed
            self._table = [n if n is not None else fallback for n in table]
            self._stale = False
            return
        raise ConnectionError(f"no Redis Cluster node answered CLUSTER SLOTS ({last})")

    def _address(self, url: str) -> str:
        parts = urlsplit(url)
        return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"

    def _address_url(self, address: str) -> str:
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(netloc=address, path=""))

    # -- calls -------------------------------------------------------------------------

    def request(self, payload: bytes, count: int) -> Awaitable[list[Any]]:
        """The raw replies of ``count`` packed commands (error replies included)."""
        single = self._single
        if single is not None:
            return single.request(payload, count)
        return self._request(payload, count)

    async def _request(self, payload: bytes, count: int) -> list[Any]:
        if self._stale:
            await self.refresh()
            if self._single is not None:
                return await self._single.request(payload, count)
        reader = hiredis.Reader()
        reader.feed(payload)
        commands = [reader.gets() for _ in range(count)]
        replies: list[Any] = [None] * count
        todo = list(range(count))
        asking: dict[int, str] = {}
        whole = self._one_node(commands)
        for _attempt in range(3):
            if whole is not None:  # every command on one node: the payload as it is
                try:
                    replies = list(await whole.request(payload, count))
                except (OSError, TimeoutError):
                    self._stale = True
                    raise
                whole = None
            else:
                await self._send(commands, todo, asking, replies)
            todo, asking, moved = [], {}, False
            for i, reply in enumerate(replies):
                if isinstance(reply, hiredis.ReplyError):
                    text = str(reply)
                    if text.startswith("MOVED "):
                        todo.append(i)
                        moved = True
                    elif text.startswith("ASK "):
                        todo.append(i)
                        asking[i] = text.split()[2]
            if not todo:
                return replies
            if moved:
                await self.refresh()
        return replies  # still redirected: the error replies stand

    def _one_node(self, commands: list[Any]) -> FastRedis | None:
        """The node of every command, when they share one (and none is ``SCRIPT``)."""
        table = self._table
        node = None
        for args in commands:
            slot = cluster.command_slot(args)
            if slot is None:
                return None
            target = table[slot]
            if node is None:
                node = target
            elif target is not node:
                return None
        return node

    async def _send(self, commands: list[Any], todo: list[int], asking: dict[int, str],
                    replies: list[Any]) -> None:
        groups: dict[int, tuple[FastRedis, list[int]]] = {}
        broadcast: list[int] = []
        for i in todo:
            args = commands[i]
            if i in asking:
                node = self._node(asking[i])
            else:
                name = args[0].upper()
                if name == b"SCRIPT":
                    broadcast.append(i)
                    continue
                slot = cluster.command_slot(args)
                node = self._table[slot] if slot is not None else self._table[0]
            group = groups.get(id(node))
            if group is None:
                group = groups[id(node)] = (node, [])
            group[1].append(i)
        calls = []
        for node, members in groups.values():
            payload = b"".join((pack((b"ASKING",)) if i in asking else b"")
                               + pack(tuple(commands[i])) for i in members)
            want = len(members) + sum(1 for i in members if i in asking)
            calls.append((members, node.request(payload, want)))
        for i in broadcast:
            packed = pack(tuple(commands[i]))
            calls.append(([i], _first(*[n.request(packed, 1) for n in self._primaries()])))
        try:
            results = await asyncio.gather(*(call for _, call in calls))
        except (OSError, TimeoutError):
            self._stale = True  # a node away: read the map again next time (failover)
            raise
        for (members, _), got in zip(calls, results, strict=True):
            if len(got) > len(members):  # ASKING's +OK replies
                got = _drop_asking(got, members, asking)
            for i, reply in zip(members, got, strict=True):
                replies[i] = reply

    def _primaries(self) -> list[FastRedis]:
        return list(dict.fromkeys(self._table))

    async def close(self) -> None:
        self._single = None
        for node in self._nodes.values():
            await node.close()


def _drop_asking(got: list[Any], members: list[int], asking: dict[int, str]) -> list[Any]:
    out: list[Any] = []
    n = 0
    for i in members:
        if i in asking:
            n += 1  # ASKING's reply
        out.append(got[n])
        n += 1
    return out


async def _first(*calls: Any) -> list[Any]:
    results = await asyncio.gather(*calls)
    return list(results[0])


def make(url: str, cluster_mode: str, *, timeout: float) -> FastRedis | ClusterFastRedis:
    """The API's hot-path client for ``url``: per node on a cluster; ``auto`` asks the
    server on the first call (the API may start before Redis answers)."""
    mode = cluster.check_mode(cluster_mode)
    if mode == "no":
        return FastRedis(url, timeout=timeout)
    return ClusterFastRedis(url, timeout=timeout, detect=mode == "auto")
