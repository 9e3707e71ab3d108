"""Session click logs for the offline evaluation of recommendations.

Two formats, told apart by their first line:

- TSV with a header naming ``SessionId``, ``ItemId`` and ``Time`` (Unix seconds), one
  click per row (the format of the session-rec / RecSys Challenge 2015 files);
- the product's event JSONL (one event per line, as ``decisions events produce`` takes):
  product views and product clicks, grouped by user.

Either way the result is a list of sessions, each its clicks in time order (ties kept in
file order), the sessions ordered by their first click.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from decisions.core.errors import FieldError, ValidationError
from decisions.core.events import parse_event

COLUMNS = ("SessionId", "ItemId", "Time")
CLICK_TYPES = ("product_view", "click")


@dataclass
class Session:
    session_id: str
    items: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # Unix seconds


def read_sessions(path: Path) -> list[Session]:
    """The sessions of a click log; a bad line raises ``ValidationError`` naming it."""
    try:
        with path.open(encoding="utf-8") as f:
            first = f.readline()
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror}") from exc
    if first.lstrip().startswith("{"):
        clicks = _jsonl(path)
    else:
        clicks = _tsv(path)
    return _grouped(clicks)


def _error(path: Path, line: int, name: str, message: str) -> ValidationError:
    return ValidationError(f"invalid click log {path}", [FieldError(name, message, line)])


def _tsv(path: Path) -> list[tuple[str, str, float]]:
    out: list[tuple[str, str, float]] = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, [])
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise _error(path, 1, "header", "expected tab-separated columns SessionId, ItemId, "
                         f"Time; missing {', '.join(missing)}")
        at = [header.index(c) for c in COLUMNS]
        width = max(at) + 1
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) < width:
                raise _error(path, line, "row", f"expected {len(header)} tab-separated values")
            session, item, raw = row[at[0]], row[at[1]], row[at[2]]
            if not session or not item:
                raise _error(path, line, "SessionId" if not session else "ItemId", "empty")
            try:
                ts = float(raw)
            except ValueError:
                raise _error(path, line, "Time", f"expected Unix seconds, got {raw!r}") from None
            out.append((session, item, ts))
    return out


def _jsonl(path: Path) -> list[tuple[str, str, float]]:
    out: list[tuple[str, str, float]] = []
    with path.open("rb") as f:
        for line, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise _error(path, line, "", f"not JSON: {exc}") from None
            try:
                event = parse_event(data)
            except ValidationError as exc:
                detail = exc.details[0] if exc.details else FieldError("", exc.message)
                raise _error(path, line, detail.field, detail.message) from None
            product = event.properties.get("product_id")
            if event.type in CLICK_TYPES and isinstance(product, str) and product:
                out.append((event.user_id, product, event.ts.timestamp()))
    return out


def _grouped(clicks: list[tuple[str, str, float]]) -> list[Session]:
    sessions: dict[str, Session] = {}
    for session_id, item, ts in clicks:
        s = sessions.get(session_id)
        if s is None:
            s = sessions[session_id] = Session(session_id)
        s.items.append(item)
        s.times.append(ts)
    for s in sessions.values():
        order = sorted(range(len(s.items)), key=s.times.__getitem__)  # stable: file order
        s.items = [s.items[i] for i in order]
        s.times = [s.times[i] for i in order]
    return sorted(sessions.values(), key=lambda s: s.times[0])
