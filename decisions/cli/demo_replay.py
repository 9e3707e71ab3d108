"""``decisions up --demo``: a small catalog and a sample stream replayed through Kafka."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, cast

import redis
from sqlalchemy import Engine

from decisions.core import keys
from decisions.core.events import format_ts, parse_event
from decisions.core.settings import Settings
from decisions.runtime import catalog, customer_records
from decisions.runtime.kafka import Producer

DEMO = resources.files("decisions.cli").joinpath("demo")
DEMO_CATALOG = Path(str(DEMO.joinpath("catalog.csv")))


def load_catalog(engine: Engine) -> int:
    return catalog.import_file(engine, DEMO_CATALOG)


def load_customers(engine: Engine) -> int:
    """Six demo shoppers with CRM attributes (tier, country, signup date, lifetime value),
    so customer rules can be tried; upserted, as ``decisions customers import`` does."""
    data = DEMO.joinpath("customers.csv").read_bytes()
    created, updated = customer_records.upsert(engine,
                                               customer_records.parse_bytes(data, ".csv").records)
    return created + updated


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


def demo_users() -> list[str]:
    """The shoppers of the bundled stream (``demo-1`` … ``demo-30``)."""
    users = {json.loads(line)["user_id"]
             for line in DEMO.joinpath("events.jsonl").read_text().splitlines() if line.strip()}
    return sorted(users, key=lambda u: (len(u), u))


def reset_shoppers(client: redis.Redis, users: list[str]) -> int:
    """Forget the demo shoppers' state, offers and recommendations in Redis.

    Each ``decisions up --demo`` replays the same stream: without this, a second run
    would find the offers of the first still active (so the rules make none) and show
    those as if they were new. Only the demo shoppers' keys are touched (``keys.user_pattern``
    and their deadlines, ``keys.deadlines``); aggregates such as top sellers stay."""
    removed = 0
    for user in users:
        found = list(client.scan_iter(match=keys.user_pattern(user), count=500))
        if found:
            removed += int(client.delete(*found))
        for key in (keys.deadlines(user), keys.DEADLINES):
            members = cast(list[bytes], client.zrange(key, 0, -1))
            stale = [m for m in members if m.startswith(user.encode() + b"|")]
            if stale:
                client.zrem(key, *stale)
    return removed


def replay(settings: Settings, pace_seconds: float = 0.0,
           events: list[dict[str, Any]] | None = None) -> int:
    producer = Producer(settings, client_id="decisions-demo")
    try:
        events = sample_events() if events is None else events
        for e in events:
            producer.send(settings.events_topic, e["user_id"], e)
            if pace_seconds:
                time.sleep(pace_seconds)
        producer.flush()
        return len(events)
    finally:
        producer.close()


def report_feedback(api_url: str, key: str, offers: list[tuple[str, dict[str, Any]]],
                    redeem_every: int = 3) -> tuple[int, int]:
    """Play the storefront: an impression for each offer shown, a redemption for every
    ``redeem_every``-th (with the order value), so the admin's Performance page has
    conversions to show. Returns (impressions, redemptions) recorded."""
    import urllib.error
    import urllib.request

    def post(path: str, body: dict[str, Any]) -> bool:
        request = urllib.request.Request(  # noqa: S310  (our own API's http URL)
            api_url + path, data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
                return 200 <= answer.status < 300
        except (urllib.error.URLError, OSError):
            return False

    shown = redeemed = 0
    for i, (user, offer) in enumerate(offers):
        path = f"/v1/offers/{offer['offer_id']}"
        if post(path + "/impression", {"user_id": user}):
            shown += 1
            if i % redeem_every == 0 and post(path + "/redeem",
                                              {"user_id": user, "amount": 250.0}):
                redeemed += 1
    return shown, redeemed
