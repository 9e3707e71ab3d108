"""Shared test helpers: events, a worker running in a thread, waiting for conditions."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from decisions.core.settings import Settings
from decisions.runtime.worker import Worker
from rulesets.document import read_file
from rulesets.store import RulesetStore

ROOT = Path(__file__).resolve().parent.parent
STARTER = ROOT / "rulesets" / "starter" / "storefront.yaml"


def event(
    etype: str, user: str, at: datetime, event_id: str | None = None, **props: Any
) -> dict[str, Any]:
    return {
        "event_id": event_id or uuid.uuid4().hex,
        "type": etype,
        "user_id": user,
        "ts": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "properties": props,
    }


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def import_starter(settings: Settings, path: Path = STARTER) -> None:
    from decisions.core.db import make_engine

    engine = make_engine(str(settings.database_url))
    data, lines = read_file(path)
    RulesetStore(engine).import_document(data, "test", "starter", lines=lines)
    engine.dispose()


def put_catalog(engine: Any, products: list[tuple[str, float, str]]) -> None:
    """Replace the catalog with ``(product_id, price, category)`` rows, all in stock."""
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("DELETE FROM products"))
        conn.execute(text(
            "INSERT INTO products (product_id, name, price, category, in_stock, updated_at) "
            "VALUES (:p, :name, :price, :c, true, now())"),
            [{"p": p, "name": p, "price": price, "c": c} for p, price, c in products])


def wait_for(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met in {timeout}s (last value: {last!r})")


@contextmanager
def running_worker(settings: Settings, **kwargs: Any) -> Iterator[Worker]:
    worker = Worker(settings, **kwargs)
    worker.start()
    thread = threading.Thread(target=worker.run, name="worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.request_stop()
        thread.join(30)
        worker.close()
