"""``decisions up --demo``: a small catalog and a sample stream replayed through Kafka."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from decisions.core.events import format_ts, parse_event
from decisions.core.settings import Settings
from decisions.runtime import catalog
from decisions.runtime.kafka import Producer

DEMO = resources.files("decisions.cli").joinpath("demo")
DEMO_CATALOG = Path(str(DEMO.joinpath("catalog.csv")))


def load_catalog(engine: Engine) -> int:
    return catalog.import_file(engine, DEMO_CATALOG)


def sample_events(now: datetime | None = None) -> list[dict[str, Any]]:
    """The bundled stream, stamped so it ends just now, with ids unique to this replay."""
    raw = [
        json.loads(line)
        for line in DEMO.joinpath("events.jsonl").read_text().splitlines()
        if line.strip()
    ]
    run = uuid.uuid4().hex[:6]
    end = now or datetime.now(UTC)
    last = max(e["offset_s"] for e in raw)
    events = []
    for e in raw:
        offset = e.pop("offset_s")
        e["ts"] = format_ts(end - timedelta(seconds=last - offset))
        e["event_id"] = f"{e['event_id']}-{run}"
        parse_event(e)  # the demo stream honours the contract
        events.append(e)
    return events


def replay(settings: Settings, pace_seconds: float = 0.0) -> int:
    producer = Producer(settings, client_id="decisions-demo")
    try:
        events = sample_events()
        for e in events:
            producer.send(settings.events_topic, e["user_id"], e)
            if pace_seconds:
                time.sleep(pace_seconds)
        producer.flush()
        return len(events)
    finally:
        producer.close()
