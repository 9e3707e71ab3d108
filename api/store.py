"""The API's own wrapper around the asyncio Redis client.

Every hot read is one round trip: the user's keys — after the rate-limit script when this
process holds no leased token of the API key (``api.ratelimit``) — go in one pipeline, on
the multiplexed client of ``decisions.core.resp.multiplexed`` (commands of concurrent
requests share socket writes). Timeouts are a few milliseconds
(``DECISIONS_REDIS_TIMEOUT_MS``) and there are no client-side retries: a slow or dead
Redis fails fast and the caller serves fallback.
Erasure and export, which scan, use redis-py with a roomier timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hiredis import ReplyError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from api.ratelimit import ALLOW, BUCKET_SCRIPT, LEASE_MS, Lease, Verdict, bucket_key, lease_size
from decisions.core import keys
from decisions.core.resp import cluster, multiplexed_cluster
from decisions.core.resp.multiplexed import RespError, pack
from decisions.core.settings import Settings
from decisions.runtime.customers import CACHE_TTL
from decisions.runtime.recommend import top_of

REDIS_ERRORS = (RedisError, RespError, OSError, TimeoutError)


@dataclass(slots=True)
class OffersView:
    verdict: Verdict
    customer: bytes | None
    offers: list[bytes]


@dataclass(slots=True)
class RecsView:
    verdict: Verdict
    customer: bytes | None
    recommendation: bytes | None
    bought: list[bytes]


class RedisStore:
    def __init__(self, settings: Settings) -> None:
        timeout = settings.redis_timeout_ms / 1000
        self.rate = settings.rate_limit_per_second
        self.burst = settings.rate_limit_burst
        self.settings_url = str(settings.redis_url)
        self.cluster_mode = settings.redis_cluster
        # one multiplexed connection, or one per node of a Redis Cluster
        self.client = multiplexed_cluster.make(str(settings.redis_url),
                                               settings.redis_cluster, timeout=timeout)
        # Admin paths (erasure, export) may scan many keys: they get a roomier timeout.
        self._slow_options = {
            "socket_timeout": max(timeout, 2.0), "socket_connect_timeout": max(timeout, 1.0),
            "retry": Retry(NoBackoff(), 0)}
        self._slow_client: Any = None
        self.lease_size = lease_size(self.rate, self.burst)
        self._leases: dict[str, Lease] = {}
        self._clock = time.monotonic
        self._bucket_sha = ""
        self._bucket_commands: dict[tuple[str, int], bytes] = {}

    @property
    def slow_client(self) -> Any:
        """redis-py's asyncio client (a ``RedisCluster`` on a cluster), made on first use."""
        if self._slow_client is None:
            self._slow_client = cluster.connect_async(
                self.settings_url, self.cluster_mode, **self._slow_options)
        return self._slow_client

    async def close(self) -> None:
        await self.client.close()
        if self._slow_client is not None:
            await self._slow_client.aclose()

    async def ping(self) -> None:
        await self.client.execute("PING")

    def _limited(self, key_prefix: str, tail: bytes, count: int) -> Awaitable[list[Any]]:
        """``count`` (≥ 1) packed commands after the key's rate limit, in one round trip.

        With a leased token left (:class:`api.ratelimit.Lease`), or one reserved from a
        lease call in flight, the commands go alone and their ``count`` raw replies come
        back (check them with :func:`_has_error`: no NOSCRIPT is possible). Otherwise the
        bucket script goes first, asking for the tokens this process is likely to spend
        soon (:meth:`Lease.wanted`), and the replies are ``count + 1``, the script's first,
        already checked.
        """
        lease = self._leases.get(key_prefix)
        if lease is None:
            lease = self.lease(key_prefix)
        now = self._clock()
        lease.count(now)
        if lease.take(now):
            return self.client.request(tail, count)
        asking = lease.asking
        if asking is not None and asking.reserved < asking.wanted - 1:
            asking.reserved += 1
            return self._reserved(lease, asking.future, asking.reserved, key_prefix, tail,
                                  count)
        return self._ask(lease, key_prefix, tail, count, now, lease.wanted(self.lease_size))

    async def _ask(self, lease: Lease, key_prefix: str, tail: bytes, count: int,
                   now: float, wanted: int) -> list[Any]:
        """The bucket script asking for ``wanted`` tokens (a lease when more than one),
        and ``count`` commands."""
        asking = lease.ask(asyncio.get_running_loop(), wanted) if wanted > 1 else None
        try:
            if not self._bucket_sha:
                await self._load_script()
            payload = self._bucket(key_prefix, wanted) + tail
            replies = await self.client.request(payload, count + 1)
            if _has_error(replies):
                replies = await self._checked(replies, key_prefix, wanted, tail, count)
        except BaseException as exc:
            if asking is not None:
                lease.failed(asking, exc)
            raise
        if asking is not None:
            lease.granted(asking, int(replies[0][0]), now, self._clock())
        return replies

    async def _reserved(self, lease: Lease, asking: asyncio.Future[int], index: int,
                        key_prefix: str, tail: bytes, count: int) -> list[Any]:
        """Commands sent while this key's lease call is in flight, paid with the lease's
        ``index``-th token (the asker spends the 0th). Sent after the lease call (on one
        connection, their replies come after its reply: the grant is known by then).
        A grant too small for this request: the script is asked for one token after all."""
        replies = await self.client.request(tail, count)
        granted = await asyncio.shield(asking)  # a cancelled request leaves it to the others
        if index < granted:
            return replies
        verdict = await self._ask(lease, key_prefix, b"", 0, self._clock(), 1)
        return [verdict[0], *replies]

    def lease(self, key_prefix: str) -> Lease:
        """This process's lease of the key's tokens (made on first use)."""
        lease = self._leases.get(key_prefix)
        if lease is None:
            if len(self._leases) > 10_000:
                self._leases.clear()
            lease = self._leases[key_prefix] = Lease()
        return lease

    async def _checked(self, replies: list[Any], key_prefix: str, wanted: int, tail: bytes,
                       count: int) -> list[Any]:
        """``replies`` of :meth:`_ask` that hold an error reply: RespError. On NOSCRIPT
        (Redis restarted or flushed its script cache) the script is loaded and the request
        sent once more."""
        error = _first_error(replies)
        if not error.startswith("NOSCRIPT"):
            raise RespError(error)
        self._bucket_sha = ""
        await self._load_script()
        self._bucket_commands.clear()
        return await self.client.pipeline_packed(self._bucket(key_prefix, wanted) + tail,
                                                 count + 1)

    def _bucket(self, key_prefix: str, wanted: int) -> bytes:
        """The packed EVALSHA of one key's bucket asking for ``wanted`` tokens (cached: it
        is the same every time)."""
        packed = self._bucket_commands.get((key_prefix, wanted))
        if packed is None:
            if len(self._bucket_commands) > 10_000:
                self._bucket_commands.clear()
            packed = self._bucket_commands[(key_prefix, wanted)] = pack(
                ("EVALSHA", self._bucket_sha, 1, bucket_key(key_prefix), self.rate, self.burst,
                 wanted, LEASE_MS))
        return packed

    async def _load_script(self) -> None:
        if not self._bucket_sha:
            self._bucket_sha = (await self.client.execute("SCRIPT", "LOAD", BUCKET_SCRIPT)).decode()

    async def rate_limit(self, key_prefix: str) -> Verdict:
        lease = self.lease(key_prefix)
        now = self._clock()
        lease.count(now)
        if lease.take(now):
            return ALLOW
        replies = await self._ask(lease, key_prefix, b"", 0, now,
                                  lease.wanted(self.lease_size))
        return Verdict.from_reply(replies[0])

    async def offers_view(self, key_prefix: str, user_id: str) -> OffersView:
        tail = _GET + _arg(keys.customer(user_id)) + _HVALS + _arg(keys.offers(user_id))
        replies = await self._limited(key_prefix, tail, 2)
        if len(replies) == 2:  # paid with a leased token
            if _has_error(replies):
                raise RespError(_first_error(replies))
            return OffersView(ALLOW, replies[0], replies[1])
        bucket, customer, offers = replies
        return OffersView(Verdict.from_reply(bucket), customer, offers)

    async def recs_view(self, key_prefix: str, user_id: str, slot: str) -> RecsView:
        tail = (_GET + _arg(keys.customer(user_id)) + _HGET + _arg(keys.recs(user_id))
                + _arg(slot) + _SMEMBERS + _arg(keys.bought(user_id)))
        replies = await self._limited(key_prefix, tail, 3)
        if len(replies) == 3:  # paid with a leased token
            if _has_error(replies):
                raise RespError(_first_error(replies))
            return RecsView(ALLOW, replies[0], replies[1], replies[2])
        bucket, customer, rec, bought = replies
        return RecsView(Verdict.from_reply(bucket), customer, rec, bought)

    async def top_sellers(self, count: int = 200) -> list[str]:
        """The top sellers: every shard's best ``count`` in one pipeline, merged."""
        replies = await self.client.pipeline(
            [("ZREVRANGE", key, 0, count - 1, "WITHSCORES") for key in keys.TOP_KEYS])
        return [product for product, _ in top_of(replies, count)]

    async def offer(self, user_id: str, offer_id: str) -> bytes | None:
        value = await self.client.execute("HGET", keys.offers(user_id), offer_id)
        return value if isinstance(value, bytes) else None

    async def cache_customer(self, user_id: str, value: bytes) -> None:
        """Overwrite the worker's cached attributes (a read of the old row, in flight,
        writes with NX and so cannot bring them back)."""
        await self.client.execute("SET", keys.customer(user_id), value, "EX", CACHE_TTL)

    # -- erasure and export -------------------------------------------------------------

    async def user_keys(self, user_id: str) -> list[bytes]:
        """Every key of the user, matched exactly (``keys.claimants``): not those of a user
        whose id merely starts with ``user_id}``. A key that two ids could own (``}`` in
        ids and event ids) is the other user's when that one has state."""
        found: list[bytes] = []
        shared: list[tuple[bytes, list[str]]] = []
        async for key in self.slow_client.scan_iter(match=keys.user_pattern(user_id), count=1000):
            others = keys.claimants(key.decode(errors="surrogateescape"), user_id)
            if others == []:
                found.append(key)
            elif others:
                shared.append((key, others))
        for key, others in shared:
            if not await self.slow_client.exists(*[keys.state(o) for o in others]):
                found.append(key)
        return found

    async def tombstone(self, user_id: str, erased_at: datetime, ttl_seconds: int) -> None:
        """The worker's state script drops the user's events from before ``erased_at``
        while this lives (a later erasure moves it forward, never back)."""
        ms = int(erased_at.timestamp() * 1000)
        await self.slow_client.set(keys.erased(user_id), ms, ex=max(1, ttl_seconds))

    async def user_deadlines(self, user_id: str) -> list[tuple[bytes, float]]:
        return [(m, s) for _, m, s in await self._user_deadlines(user_id)]

    async def _user_deadlines(self, user_id: str) -> list[tuple[str, bytes, float]]:
        """(key, member, score) of the user's timers: in their shard, and in the one key of
        before #20."""
        escaped = "".join("\\" + c if c in "*?[]\\" else c for c in user_id)
        members: list[tuple[str, bytes, float]] = []
        for key in (keys.deadlines(user_id), keys.DEADLINES):
            async for member, score in self.slow_client.zscan_iter(
                key, match=escaped + "|*", count=1000
            ):
                if member.startswith(user_id.encode() + b"|"):
                    members.append((key, member, score))
        return members

    async def erase_user(self, user_id: str) -> dict[str, int]:
        """Delete the user's keys (not the tombstone) and deadlines."""
        tombstone = keys.erased(user_id).encode()
        found = [k for k in await self.user_keys(user_id) if k != tombstone]
        deleted = 0
        for start in range(0, len(found), 500):
            deleted += int(await self.slow_client.delete(*found[start : start + 500]))
        removed = 0
        by_key: dict[str, list[bytes]] = {}
        for key, member, _ in await self._user_deadlines(user_id):
            by_key.setdefault(key, []).append(member)
        for key, deadlines in by_key.items():
            for start in range(0, len(deadlines), 500):
                chunk = deadlines[start : start + 500]
                removed += int(await self.slow_client.zrem(key, *chunk))
        return {"redis_keys": deleted, "deadlines": removed}

    async def export_user(self, user_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in sorted(await self.user_keys(user_id)):
            out[key.decode()] = await self._dump(key)
        deadlines = await self.user_deadlines(user_id)
        return {"keys": out, "deadlines": {m.decode(): s for m, s in deadlines}}

    async def _dump(self, key: bytes) -> Any:
        client = self.slow_client
        kind = _text(await client.type(key))
        if kind == "string":
            return _text(await client.get(key))
        if kind == "hash":
            return {_text(k): _text(v) for k, v in (await client.hgetall(key)).items()}
        if kind == "set":
            return sorted(_text(v) for v in await client.smembers(key))
        if kind == "zset":
            pairs: Any = await client.zrange(key, 0, -1, withscores=True)
            return [[_text(m), s] for m, s in pairs]
        if kind == "list":
            return [_text(v) for v in await client.lrange(key, 0, -1)]
        return None


# The read path's commands, packed by hand (``pack`` does the same for any arguments).
_GET = b"*2\r\n$3\r\nGET\r\n"
_HVALS = b"*2\r\n$5\r\nHVALS\r\n"
_HGET = b"*3\r\n$4\r\nHGET\r\n"
_SMEMBERS = b"*2\r\n$8\r\nSMEMBERS\r\n"


def _arg(value: str) -> bytes:
    data = value.encode()
    return b"$%d\r\n%b\r\n" % (len(data), data)


def _first_error(replies: list[Any]) -> str:
    return next(str(r) for r in replies if isinstance(r, ReplyError))


def _has_error(replies: list[Any]) -> bool:
    for reply in replies:
        if isinstance(reply, ReplyError):
            return True
    return False


def _text(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


__all__ = ["ALLOW", "REDIS_ERRORS", "OffersView", "RecsView", "RedisStore"]
