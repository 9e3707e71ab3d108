"""Redis Cluster: telling one apart, making redis-py clients for it, routing by key slot.

``DECISIONS_REDIS_CLUSTER`` says whether ``DECISIONS_REDIS_URL`` names a cluster node:
``yes``, ``no`` or ``auto`` (the default: ask the server once, ``INFO cluster``). Any one
node's URL is enough; the clients learn the others from it (``CLUSTER SLOTS``).

Which client does what on a cluster:

- redis-py's ``RedisCluster`` for everything that is not a hot path (admin, CLI, erasure,
  housekeeping) and as the worker's map of slots to nodes;
- the worker's ``RawPipeline`` (``decisions.core.resp.pipeline``) groups its commands by
  the node that owns their slot and sends each group in one write, all groups at once;
- the API's ``ClusterFastRedis`` (``decisions.core.resp.multiplexed_cluster``) keeps one
  multiplexed connection per node.

Every multi-key command and script the product sends names keys of one slot (a user's
keys share the hash tag ``{user_id}``); the one exception, the customers' ``MGET``, is
split per key by the clients here.
"""

from __future__ import annotations

from typing import Any, cast

import redis
from redis.crc import key_slot

from decisions.core.errors import ConfigError
from decisions.core.resp.multiplexed import RespError

MODES = ("auto", "yes", "no")
SETTING = "DECISIONS_REDIS_CLUSTER"
_detected: dict[str, bool] = {}


def check_mode(mode: str) -> str:
    mode = (mode or "auto").strip().lower()
    if mode not in MODES:
        raise ConfigError(f"{SETTING}={mode!r}: expected one of {', '.join(MODES)}")
    return mode


def is_cluster(url: str, mode: str = "auto") -> bool:
    """Whether ``url`` names a node of a Redis Cluster (``auto``: asks the server, once per
    URL; a server that cannot be reached counts as no cluster, for now)."""
    mode = check_mode(mode)
    if mode != "auto":
        return mode == "yes"
    return bool(_server_says(url))


def _server_says(url: str) -> bool | None:
    """``INFO cluster``'s answer, once per URL; None when the server cannot be asked."""
    if url in _detected:
        return _detected[url]
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        info = client.info("cluster")
    except redis.ConnectionError:
        return None  # not cached: asked again next time
    except redis.ResponseError:  # a proxy or a server without INFO cluster
        info = {}
    finally:
        client.close()
    found = _detected[url] = bool(info.get("cluster_enabled"))
    return found


def verify(url: str, mode: str) -> None:
    """ConfigError, naming the setting, when ``DECISIONS_REDIS_CLUSTER`` contradicts the
    server (``no`` on a cluster node, ``yes`` on a plain Redis)."""
    from decisions.core.db import redact

    mode = check_mode(mode)
    if mode == "auto":
        return
    says = _server_says(url)
    if says is None or says == (mode == "yes"):
        return
    if says:
        raise ConfigError(f"the Redis at {redact(url)} is a cluster node, but {SETTING}=no: "
                          f"set {SETTING}=auto (or yes)")
    raise ConfigError(f"{SETTING}=yes, but the Redis at {redact(url)} is no cluster node: "
                      f"set {SETTING}=no (or auto)")


def connect(url: str, mode: str = "auto", **options: Any) -> redis.Redis:
    """A redis-py client for ``url``: a ``RedisCluster`` when it names a cluster node.

    Typed as ``redis.Redis``: ``RedisCluster`` offers the same commands (it is no
    subclass), and the product only calls commands that exist on both."""
    verify(url, mode)
    if is_cluster(url, mode):
        try:
            return cast(redis.Redis, redis.RedisCluster.from_url(_no_db(url), **options))
        except redis.RedisClusterException as exc:
            raise _cluster_failure(url, exc) from None
    return redis.Redis.from_url(url, **options)


def _cluster_failure(url: str, exc: Exception) -> Exception:
    from decisions.core.db import redact
    from decisions.core.errors import ServiceUnavailable

    if "Cluster mode is not enabled" in str(exc):
        return ConfigError(f"{SETTING}=yes, but the Redis at {redact(url)} is no cluster "
                           f"node: set {SETTING}=no (or auto)")
    reason = str(exc).rsplit(": ", 1)[-1]
    return ServiceUnavailable("Redis Cluster", redact(url), "DECISIONS_REDIS_URL", reason)


def connect_async(url: str, mode: str = "auto", **options: Any) -> Any:
    """The asyncio counterpart of :func:`connect` (``redis.asyncio``)."""
    import redis.asyncio as aioredis

    if is_cluster(url, mode):
        return aioredis.RedisCluster.from_url(_no_db(url), **options)
    return aioredis.Redis.from_url(url, **options)


def is_cluster_client(client: Any) -> bool:
    return isinstance(client, redis.RedisCluster)


def _no_db(url: str) -> str:
    """A cluster has database 0 only: ``redis://h:p/0`` is accepted, the path dropped."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    db = parts.path.strip("/")
    if db not in ("", "0"):
        raise ConfigError(f"DECISIONS_REDIS_URL names database {db}, but a Redis Cluster has "
                          "database 0 only: drop the /<db> from the URL")
    return urlunsplit(parts._replace(path=""))


# -- routing ---------------------------------------------------------------------------

def slot(key: bytes | str) -> int:
    return int(key_slot(key.encode() if isinstance(key, str) else key))


def command_slot(args: tuple[Any, ...] | list[Any]) -> int | None:
    """The slot of a command's keys (its first key: they all share one), None for a
    keyless command (``SCRIPT``, ``PING``, ...)."""
    name = args[0]
    if isinstance(name, bytes):
        name = name.decode()
    name = name.upper()
    if name in ("EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO", "FCALL"):
        return slot(_arg(args[3])) if len(args) > 3 and int(args[2]) > 0 else None
    if name in KEYLESS or len(args) < 2:
        return None
    return slot(_arg(args[1]))


KEYLESS = frozenset({"PING", "SCRIPT", "INFO", "CLUSTER", "ECHO", "TIME", "DBSIZE",
                     "FLUSHDB", "FLUSHALL", "ASKING", "READONLY", "AUTH", "SELECT", "HELLO"})


def _arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


# -- errors ----------------------------------------------------------------------------

_MISCONFIGURED = {
    "CROSSSLOT": "a command spans keys of several slots on this Redis Cluster",
    "WRONGTYPE": "a key holds another type than the product expects (is this Redis shared "
                 "with another application, or the wrong database?)",
    "NOAUTH": "Redis wants a password",
    "WRONGPASS": "Redis refused the user name or password",
    "NOPERM": "the Redis user lacks a permission the product needs",
    "MOVED": "the Redis server is a cluster node but the client was not told so",
    "ASK": "the Redis server is a cluster node but the client was not told so",
    "ERR This instance has cluster support disabled":
        "DECISIONS_REDIS_CLUSTER=yes, but this Redis is no cluster",
    "CLUSTERDOWN Hash slot not served": "a slot of the Redis Cluster has no node",
}


def misconfiguration(exc: BaseException) -> str | None:
    """One line naming the fault and the setting to change, when ``exc`` is a Redis error
    that retrying will not fix (a passing outage, e.g. a node restarting, gives None)."""
    text = str(exc).strip()
    if isinstance(exc, redis.AuthenticationError):
        return (f"Redis refused the connection ({text.splitlines()[0] if text else 'auth'});"
                " check the user and password in DECISIONS_REDIS_URL")
    if not isinstance(exc, redis.ResponseError | RespError):
        return None
    for prefix, reason in _MISCONFIGURED.items():
        if text.startswith(prefix):
            setting = ("DECISIONS_REDIS_URL" if prefix in ("NOAUTH", "WRONGPASS", "NOPERM",
                                                           "WRONGTYPE")
                       else SETTING)
            return f"Redis: {reason} ({text.splitlines()[0][:120]}); check {setting}"
    return None


__all__ = ["MODES", "check_mode", "command_slot", "connect", "connect_async", "is_cluster",
           "is_cluster_client", "misconfiguration", "slot"]
