"""Absences become events: deadlines per user in sorted sets, fired as timer events.

The deadlines are spread over ``keys.SHARDS`` sorted sets by a hash of the user
id, each its own hash tag (a Redis Cluster spreads their writes over its nodes); the
firer reads every shard, and the one key of before (``keys.DEADLINES``) until it is
drained.

Every idle timer of the active rules (``idle_30m``: no activity for 30 minutes) is due its
delay after the user's newest event; ``ZADD GT`` keeps a later deadline already set, so a
late event never pulls one earlier. When the wall clock passes a deadline, a ``timer``
event is produced to the events topic (keyed by the user, so it is decided in order with
the user's other events) and the deadline dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis

from decisions.core import keys
from decisions.core.events import format_ts
from decisions.core.resp.pipeline import RawPipeline, RawScript
from decisions.runtime.kafka import Producer

DROP_DEADLINE = """
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if cur and tonumber(cur) == tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""


def deadlines(latest: dict[str, int], timers: list[tuple[str, int]]) -> dict[str, int]:
    """Deadline members (``user|timer``) and when they are due, from each user's newest
    event time of a batch (ms) and the active rules' timers (name, delay ms)."""
    if not timers:
        return {}
    return {f"{user_id}|{name}": ts_ms + delay_ms
            for user_id, ts_ms in latest.items() for name, delay_ms in timers}


def queue_deadlines(pipe: RawPipeline, due: dict[str, int]) -> None:
    """One command per shard the batch's users fall in; GT: a late event never pulls a
    deadline earlier."""
    shards: dict[str, list[str | int]] = {}
    for member, at in due.items():
        shards.setdefault(keys.deadlines(member.rpartition("|")[0]), []).extend((at, member))
    for key, flat in shards.items():
        pipe.command("ZADD", key, "GT", *flat)


class TimerFirer:
    def __init__(self, client: redis.Redis, events_topic: str,
                 headers: Callable[[bytes], list[tuple[str, bytes]]] | None = None) -> None:
        """``headers``: of each timer record, from its value (the worker's signature,
        ``records.timer_headers``: a timer without it is dead-lettered as forged)."""
        self.redis = client
        self.events_topic = events_topic
        self.headers = headers
        self._drop = RawScript(DROP_DEADLINE)

    def fire_due(self, producer: Producer, limit: int = 500) -> int:
        """Produce a timer event for every deadline that passed (wall clock), then drop it.

        Produced before removal: a crash in between re-fires the timer with the same
        deterministic event id, which dedup drops."""
        now_ms = int(time.time() * 1000)
        read = RawPipeline(self.redis)
        for key in keys.ALL_DEADLINE_KEYS:
            read.command("ZRANGEBYSCORE", key, "-inf", now_ms, "WITHSCORES", "LIMIT", 0, limit)
        found: list[tuple[float, bytes, str]] = []
        for key, reply in zip(keys.ALL_DEADLINE_KEYS, read.execute(), strict=True):
            found.extend((score, member, key) for member, score in _scored(reply))
        if not found:
            return 0
        found.sort()
        due = [(member, score, key) for score, member, key in found[:limit]]
        records = []
        for member, score, _ in due:
            user_id, _, name = member.decode().rpartition("|")
            due_ts = datetime.fromtimestamp(score / 1000, UTC)
            records.append((user_id, {
                "event_id": f"timer:{name}:{user_id}:{int(score)}", "type": "timer",
                "user_id": user_id, "ts": format_ts(due_ts),
                "properties": {"timer": name, "due": format_ts(due_ts)},
            }))
        producer.send_many(self.events_topic, records, headers=self.headers)
        pipe = RawPipeline(self.redis)
        for member, score, key in due:
            # only if unchanged: another worker may have pushed the deadline meanwhile
            pipe.script(self._drop, (key,), (member, int(score)))
        pipe.execute()
        return len(records)


def _scored(reply: list[Any]) -> list[tuple[bytes, float]]:
    """``ZRANGEBYSCORE … WITHSCORES``: RESP3 gives pairs, RESP2 a flat list."""
    if reply and isinstance(reply[0], list):
        return [(m, float(s)) for m, s in reply]
    return [(reply[i], float(reply[i + 1])) for i in range(0, len(reply), 2)]
