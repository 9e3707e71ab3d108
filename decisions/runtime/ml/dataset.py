"""Training tables: labelled feature rows built by replaying the event archive.

Rows come from ``(event, snapshot)`` pairs, the snapshot being exactly what the worker
computes for that event (``decisions.runtime.state.replay`` runs the same Lua script under a
scratch prefix). Labels come from what happened next in the same history:

* ``purchase_intent``: one row per non-purchase event; 1 when the same user purchases later
  in the same session (a session ends after 30 minutes without events).
* ``churn_risk``: one row per customer (``order_count >= 1``) and UTC day, the day's last
  event; 1 when the customer makes no purchase in the following ``churn_days`` days.

A row whose outcome is not known by the end of the history read (the session may still
be going on, the ``churn_days`` are not over) is dropped rather than guessed.
"""

from __future__ import annotations

import bisect
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from decisions.core.events import Event
from decisions.runtime.archive import EventArchive
from decisions.runtime.ml.features import ALL_FEATURES, Extractor

SESSION_GAP_SECONDS = 30 * 60
NO_ROW_TYPES = frozenset({"purchase", "consent", "timer"})
PURCHASE_INTENT, CHURN_RISK = "purchase_intent", "churn_risk"


@dataclass
class Table:
    """Feature rows (all of :data:`ALL_FEATURES`), labels and row times (epoch seconds)."""

    model: str
    X: np.ndarray
    y: np.ndarray
    ts: np.ndarray
    features: tuple[str, ...] = ALL_FEATURES
    info: dict[str, Any] = field(default_factory=dict)
    ids: np.ndarray | None = None  # event id of each row (for audits and benchmarks)
    users: np.ndarray | None = None  # user id of each row

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def columns(self, names: Sequence[str]) -> np.ndarray:
        index = {n: i for i, n in enumerate(self.features)}
        missing = [n for n in names if n not in index]
        if missing:
            raise KeyError(f"features not in this table: {', '.join(missing)}")
        return self.X[:, [index[n] for n in names]]

    def subset(self, mask: np.ndarray) -> Table:
        return Table(
            self.model, self.X[mask], self.y[mask], self.ts[mask], self.features,
            dict(self.info),
            None if self.ids is None else self.ids[mask],
            None if self.users is None else self.users[mask],
        )


@dataclass
class _Row:
    ts: float
    user_id: str
    event_id: str
    values: list[float]
    label: int = -1  # -1: not known yet
    session_last: float = 0.0  # purchase intent: last event time of the row's session
    purchases: list[float] = field(default_factory=list)  # churn: the user's purchase times


def build_table(
    model: str,
    snapshots: Iterable[tuple[Event, Mapping[str, Any]]],
    start: datetime,
    end: datetime,
    *,
    customers: Mapping[str, Mapping[str, Any]] | None = None,
    churn_days: float = 30.0,
    data_end: datetime | None = None,
) -> Table:
    """Label rows with ``start <= ts < end`` from snapshots of a history in event-time order.

    The history may (and should) begin before ``start`` (so windows and lifetime counters
    are warm) and run past ``end`` (so late rows get their outcome); ``data_end`` is where
    the history stops (default: the last event seen).
    """
    if model == PURCHASE_INTENT:
        rows, last = _purchase_intent_rows(snapshots, start, end, customers or {})
    elif model == CHURN_RISK:
        rows, last = _churn_rows(snapshots, start, end, customers or {}, churn_days)
    else:
        raise KeyError(f"unknown model {model!r}")
    horizon_end = (data_end.timestamp() if data_end else last) if last is not None else 0.0
    if model == PURCHASE_INTENT:
        _label_open_sessions(rows, horizon_end)
    else:
        _label_churn(rows, horizon_end, churn_days)
    kept = [r for r in rows if r.label >= 0]
    X = np.array([r.values for r in kept], dtype=np.float64).reshape(len(kept), len(ALL_FEATURES))
    table = Table(
        model,
        X,
        np.array([r.label for r in kept], dtype=np.int8),
        np.array([r.ts for r in kept], dtype=np.float64),
        ids=np.array([r.event_id for r in kept], dtype=object),
        users=np.array([r.user_id for r in kept], dtype=object),
    )
    table.info = {
        "rows": len(kept),
        "positives": int(table.y.sum()),
        "dropped_unknown_outcome": len(rows) - len(kept),
        "start": start.isoformat(),
        "end": end.isoformat(),
    }
    return table


# -- purchase intent ------------------------------------------------------------------

def _purchase_intent_rows(
    snapshots: Iterable[tuple[Event, Mapping[str, Any]]],
    start: datetime,
    end: datetime,
    customers: Mapping[str, Mapping[str, Any]],
) -> tuple[list[_Row], float | None]:
    extractor = Extractor(ALL_FEATURES)
    lo, hi = start.timestamp(), end.timestamp()
    rows: list[_Row] = []
    pending: dict[str, list[_Row]] = defaultdict(list)  # rows of the user's open session
    last_seen: dict[str, float] = {}
    last: float | None = None
    for event, snapshot in snapshots:
        t = event.ts.timestamp()
        last = t if last is None else max(last, t)
        if event.type == "timer":  # the worker's own deadline events are not visits
            continue
        uid = event.user_id
        prev = last_seen.get(uid)
        if prev is not None and t - prev > SESSION_GAP_SECONDS:
            for row in pending.pop(uid, ()):  # the session ended without a purchase
                row.label = 0
        last_seen[uid] = t if prev is None else max(prev, t)
        if event.type == "purchase":
            for row in pending.pop(uid, ()):
                row.label = 1
            continue
        if event.type in NO_ROW_TYPES or not lo <= t < hi:
            continue
        row = _Row(t, uid, event.event_id, extractor.values(snapshot, customers.get(uid)))
        rows.append(row)
        pending[uid].append(row)
    for uid, open_rows in pending.items():  # sessions still open when the history ends
        for row in open_rows:
            row.session_last = last_seen[uid]
    return rows, last


def _label_open_sessions(rows: list[_Row], horizon_end: float) -> None:
    for row in rows:
        if row.label < 0:
            if row.session_last + SESSION_GAP_SECONDS <= horizon_end:
                row.label = 0  # the session was over before the history ends


# -- churn ----------------------------------------------------------------------------
def _churn_rows(
    snapshots: Iterable[tuple[Event, Mapping[str, Any]]],
    start: datetime,
    end: datetime,
    customers: Mapping[str, Mapping[str, Any]],
    churn_days: float,
) -> tuple[list[_Row], float | None]:
    extractor = Extractor(ALL_FEATURES)
    lo, hi = start.timestamp(), end.timestamp()
    day_last: dict[tuple[str, int], tuple[float, str, Mapping[str, Any]]] = {}
    purchases: dict[str, list[float]] = defaultdict(list)
    last: float | None = None
    for event, snapshot in snapshots:
        t = event.ts.timestamp()
        last = t if last is None else max(last, t)
        if event.type == "purchase":
            purchases[event.user_id].append(t)
        if not lo <= t < hi or event.type == "timer":
            continue
        order_count = snapshot.get("order_count", 0)
        if not isinstance(order_count, int | float) or order_count < 1:
            continue
        key = (event.user_id, int(t // 86400))
        if key not in day_last or day_last[key][0] <= t:
            day_last[key] = (t, event.event_id, snapshot)
    rows = []
    for (uid, _day), (t, event_id, snapshot) in day_last.items():
        row = _Row(t, uid, event_id, extractor.values(snapshot, customers.get(uid)))
        row.purchases = purchases[uid]
        rows.append(row)
    for times in purchases.values():
        times.sort()
    rows.sort(key=lambda r: r.ts)
    return rows, last


def _label_churn(rows: list[_Row], horizon_end: float, churn_days: float) -> None:
    span = churn_days * 86400
    for row in rows:
        times = row.purchases
        i = bisect.bisect_right(times, row.ts)
        if i < len(times) and times[i] - row.ts <= span:
            row.label = 0
        elif row.ts + span <= horizon_end:
            row.label = 1
        # else: the customer might still come back within the window: unknown


# -- from the archive -----------------------------------------------------------------
def load_customers(engine: Engine) -> dict[str, dict[str, Any]]:
    from decisions.core.models import Customer

    with engine.connect() as conn:
        result = conn.execute(
            select(Customer.user_id, Customer.tier, Customer.country, Customer.segments)
        )
        return {
            uid: {"tier": tier, "country": country, "segments": list(segments or [])}
            for uid, tier, country, segments in result
        }


def replay_archive(
    archive: EventArchive, client: Any, start: datetime, end: datetime
) -> Iterator[tuple[Event, dict[str, Any]]]:
    """Snapshots of the archived events in ``[start, end)`` through the worker's Lua code."""
    from decisions.runtime import state

    prefix = f"train-{uuid.uuid4().hex[:12]}:"
    try:
        yield from state.replay(archive.read(start, end), client, prefix)
    finally:
        state.clear_scratch(client, prefix)


def table_from_archive(
    engine: Engine,
    client: Any,
    model: str,
    start: datetime,
    end: datetime,
    *,
    warmup_days: float = 35.0,
    churn_days: float = 30.0,
) -> Table:
    """Replay ``[start - warmup, end + outcome horizon)`` and label rows in ``[start, end)``."""
    archive = EventArchive(engine)
    bounds = archive.bounds()
    horizon = timedelta(days=churn_days) if model == CHURN_RISK else timedelta(hours=6)
    read_end = end + horizon
    if bounds is not None:
        read_end = min(read_end, bounds[1] + timedelta(microseconds=1))
    snapshots = replay_archive(archive, client, start - timedelta(days=warmup_days), read_end)
    return build_table(
        model,
        snapshots,
        start,
        end,
        customers=load_customers(engine),
        churn_days=churn_days,
        data_end=read_end,
    )


def live_rows(
    model: str,
    snapshots: Iterable[tuple[Event, Mapping[str, Any]]],
    start: datetime,
    end: datetime,
    customers: Mapping[str, Mapping[str, Any]] | None = None,
) -> np.ndarray:
    """Feature rows (all features) the model would score in ``[start, end)``, no labels.

    The same row selection as :func:`build_table`, for comparing live traffic with the
    training rows (drift).
    """
    customers = customers or {}
    extractor = Extractor(ALL_FEATURES)
    lo, hi = start.timestamp(), end.timestamp()
    rows: list[list[float]] = []
    day_last: dict[tuple[str, int], tuple[float, Mapping[str, Any]]] = {}
    for event, snapshot in snapshots:
        t = event.ts.timestamp()
        if not lo <= t < hi:
            continue
        if model == PURCHASE_INTENT:
            if event.type not in NO_ROW_TYPES:
                rows.append(extractor.values(snapshot, customers.get(event.user_id)))
        elif event.type != "timer":
            orders = snapshot.get("order_count", 0)
            if isinstance(orders, int | float) and orders >= 1:
                key = (event.user_id, int(t // 86400))
                if key not in day_last or day_last[key][0] <= t:
                    day_last[key] = (t, snapshot)
    for (uid, _day), (_t, snapshot) in day_last.items():
        rows.append(extractor.values(snapshot, customers.get(uid)))
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(ALL_FEATURES))
