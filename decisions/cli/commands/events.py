"""``decisions events send FILE``: validate a JSON-lines file of events and produce it to Kafka."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from decisions.core.errors import FieldError, ValidationError
from decisions.core.events import TimeWindow, parse_event
from decisions.core.settings import Settings


def register(sub: Any) -> None:
    events = sub.add_parser("events", help="send events to the events topic")
    verbs = events.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    send = verbs.add_parser(
        "send",
        help="validate a JSON-lines file and produce every event",
        description="Every line is checked first; with any bad line "
        "nothing is sent and each problem is listed as file:line.",
    )
    send.add_argument("file", type=Path, help="JSON lines, one event per line ('-' = stdin)")
    send.set_defaults(handler=cmd_send)


def read_events(path: Path, window: TimeWindow | None = None) -> list[dict[str, Any]]:
    """The events of a JSON-lines file, each checked against the contract (and the
    intake time window, the one the worker applies: an event it would dead-letter is
    refused here, with its line)."""
    name = "<stdin>" if str(path) == "-" else str(path)
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError(f"{name}: cannot read ({exc.strerror})") from None
    events: list[dict[str, Any]] = []
    errors: list[FieldError] = []
    now = datetime.now(UTC)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            errors.append(FieldError("", f"not valid JSON ({exc})", number))
            continue
        try:
            parse_event(data, window=window, now=now)
        except ValidationError as exc:
            errors.extend(FieldError(d.field, d.message, number) for d in exc.details)
            continue
        events.append(data)
    if errors:
        raise ValidationError(f"{name}: {len(errors)} problem(s); nothing was sent", errors)
    return events


def cmd_send(args: argparse.Namespace, settings: Settings) -> int:
    from decisions.core.stackfile import require, resolve
    from decisions.runtime.kafka import Producer, ensure_topics

    window = TimeWindow.of(settings.event_max_age_seconds, settings.event_max_future_seconds)
    events = read_events(args.file, window)
    require(settings, "kafka_bootstrap")
    settings = resolve(settings)
    ensure_topics(settings, [settings.events_topic])
    producer = Producer(settings, client_id="decisions-cli")
    try:
        sent = producer.send_many(settings.events_topic, [(e["user_id"], e) for e in events])
    finally:
        producer.close()
    print(f"sent {sent} events to {settings.events_topic} (acknowledged by the broker)")
    return 0
