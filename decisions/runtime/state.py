"""Per-user state in Redis, updated atomically by one Lua script per event.

``StateStore.apply_batch`` pipelines the script for a batch of events (in order, so a
user's events apply in partition order) and returns, per event, whether it was a
duplicate and the *snapshot*: the user's features as of that event's own time (event
time), the input of rules and models. ``decisions/core/keys.py`` lists the keys.

Erased users: an event from before the user's erasure (``d:erased:{uid}``, see
``decisions.runtime.erasure``) touches nothing; it comes back ``done`` (and ``erased``), so
the worker drops it like a duplicate, and counts it in ``decisions_events_erased_total``.

Duplicates: the dedup marker holds the snapshot until the event's effects are stored
(``mark_done``), so an event redelivered after a crash is re-decided from the very same
snapshot (its effects are idempotent); once done, a redelivery is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
import redis

from decisions.core import keys, metrics
from decisions.core.events import Event
from decisions.core.resp.pipeline import RawPipeline, RawScript
from rulesets.language import windowed

LUA = resources.files("decisions.runtime").joinpath("state.lua").read_text()
LIST_FEATURES = ("cart_products", "recent_products", "session_products", "recent_categories",
                 "segments")
DONE = b"done"
ERASED = 2  # the script's first reply for an event of an erased user


@dataclass(frozen=True)
class Applied:
    event: Event
    snapshot: dict[str, Any]
    duplicate: bool  # seen before (its snapshot is reused)
    done: bool  # seen before and its effects already stored (or erased): skip it
    erased: bool = False  # from before its user's erasure: dropped, nothing touched


def _normalise(snapshot: dict[str, Any]) -> dict[str, Any]:
    # cjson encodes an empty Lua table as {}; our lists must stay lists
    for name in LIST_FEATURES:
        if not isinstance(snapshot.get(name), list):
            snapshot[name] = []
    return snapshot


class StateStore:
    def __init__(self, client: redis.Redis, dedup_ttl_seconds: int = 48 * 3600) -> None:
        self.client = client
        self.ttl = dedup_ttl_seconds
        self._script = RawScript(LUA)
        # Windowed features to compute ("" = all; see ``wanted_features``). The worker
        # narrows it to what the active rules read; replays keep the full snapshot.
        self.wanted = ""

    def _queue(self, pipe: RawPipeline, event: Event) -> None:
        props = event.properties
        page = props.get("page", "") if event.type == "page_view" else ""
        product = props.get("product_id") or ""
        pipe.script(self._script, (keys.tag(event.user_id),), (
            event.event_id,
            event.type,
            event.ts_ms,
            orjson.dumps(props),
            self.ttl,
            page if isinstance(page, str) else "",
            product if isinstance(product, str) else "",
            self.wanted,
        ))

    def apply_batch(self, events: Sequence[Event]) -> list[Applied]:
        if not events:
            return []
        pipe = RawPipeline(self.client)
        for event in events:
            self._queue(pipe, event)
        results = pipe.execute()
        out: list[Applied] = []
        erased = 0
        for event, (dup, raw) in zip(events, results, strict=True):
            if dup == ERASED:
                erased += 1
                out.append(Applied(event, {}, True, True, erased=True))
                continue
            done = bool(dup) and raw == DONE
            snapshot = {} if done else _normalise(orjson.loads(raw))
            out.append(Applied(event, snapshot, bool(dup), done))
        if erased:
            metrics.ERASED_DROPPED.inc(erased)
        return out

    def mark_done(self, events: Iterable[Event]) -> None:
        pipe = RawPipeline(self.client)
        for event in events:
            pipe.command("SET", keys.seen(event.user_id, event.event_id), DONE, "KEEPTTL")
        pipe.execute()


WINDOWED = re.compile(
    r"^(?:count_(?P<ctype>[a-z_]+)_(?P<window>5m|1h|24h|30d)"
    r"|since_(?P<stype>page_view|product_view|click|add_to_cart|remove_from_cart|purchase"
    r"|search)|since_page_(?P<page>[a-z0-9_]+))$"
)
# the script's codes for the scopes of rulesets.language.windowed
_SCOPE_CODES = {"": "", "this_product": "tp", "this_category": "tc", "this_page": "tg",
                "product": "p", "category": "c", "page": "g"}
ALL = "*"  # a spec token: every standard windowed feature (as the empty spec)


def wanted_features(paths: Iterable[str]) -> str:
    """The script's spec for the windowed state features among ``paths`` (``state.*``).

    Windowed features (counts per type and window, seconds since a type or a page; counts
    and recency per product, category or page over any window) are most of the script's
    cost, so the worker asks only for those its rules read. A spec is never empty (that
    means "all standard ones"): with none wanted it names a harmless placeholder.
    """
    tokens: set[str] = set()
    for path in paths:
        if not path.startswith("state."):
            continue
        name = path[len("state."):]
        if name == "since_same_product_view":
            tokens.add("sp")
            continue
        w = windowed(name)  # first: since_page_view_this_page is not the page "view_this_page"
        m = WINDOWED.match(name) if w is None or w.scope == "" else None
        if m is not None:
            if m["ctype"]:
                tokens.add(f"c:{m['ctype']}:{m['window']}")
            elif m["stype"]:
                tokens.add(f"s:{m['stype']}")
            elif m["page"]:
                tokens.add(f"p:{m['page']}")
            continue
        if w is None:
            continue
        code = _SCOPE_CODES[w.scope]
        if w.kind == "count":
            tokens.add(f"n:{name}:{w.type}:{w.window_ms}:{code}:{w.value}")
        else:
            tokens.add(f"r:{name}:{w.type}:{code}:{w.value}")
    return ",".join(sorted(tokens)) or "none:-"


def replay_features(paths: Iterable[str]) -> str:
    """The spec of a replay (backtests, Try it): every standard feature, plus the counts
    and recency per product / category / page that ``paths`` read."""
    extra = [t for t in wanted_features(paths).split(",") if t[:2] in ("n:", "r:")]
    return ",".join([ALL, *extra])


def replay(
    events: Iterable[Event], client: redis.Redis, prefix: str, batch: int = 500,
    wanted: str = "",
) -> Iterator[tuple[Event, dict[str, Any]]]:
    """Run history through the same Lua code under scratch user ids (``prefix`` + user id).

    Used to build training tables and backtests: the snapshot of each event is exactly
    what the live worker computed for it. The caller deletes the scratch keys afterwards
    (``clear_scratch``). ``wanted``: the spec ("" = every standard feature; see
    ``replay_features`` for what a ruleset's rules also read).
    """
    store = StateStore(client, dedup_ttl_seconds=3600)
    store.wanted = wanted
    chunk: list[Event] = []

    def flush() -> Iterator[tuple[Event, dict[str, Any]]]:
        scratch = [Event(e.event_id, e.type, prefix + e.user_id, e.ts, e.properties) for e in chunk]
        for original, applied in zip(chunk, store.apply_batch(scratch), strict=True):
            if not applied.done:
                yield original, applied.snapshot
        chunk.clear()

    for event in events:
        chunk.append(event)
        if len(chunk) >= batch:
            yield from flush()
    if chunk:
        yield from flush()


def clear_scratch(client: redis.Redis, prefix: str) -> int:
    removed = 0
    for key in client.scan_iter(match=keys.scratch_pattern(prefix), count=1000):
        removed += int(client.delete(key))
    return removed
