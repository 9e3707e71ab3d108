"""`decisions events send`: bad lines are named by line and nothing is sent; good files go out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from decisions.cli.main import main
from decisions.core.settings import Settings
from tests.helpers import event, now


def _env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setenv("DECISIONS_KAFKA_BOOTSTRAP", str(settings.kafka_bootstrap))
    monkeypatch.setenv("DECISIONS_EVENTS_TOPIC", settings.events_topic)
    monkeypatch.setenv("DECISIONS_VAR_DIR", str(settings.var_dir))


def test_bad_lines_are_reported_with_line_numbers(
    tmp_path: Path,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _env(monkeypatch, settings)
    good = event("page_view", "u1", now(), page="home")
    path = tmp_path / "events.jsonl"
    path.write_text(
        f"{__import__('json').dumps(good)}\n{{not json\n"
        '{"event_id": "e", "type": "teleport", "user_id": "u", "ts": "2026-01-01T00:00:00Z"}\n'
    )
    assert main(["events", "send", str(path)]) == 2
    err = capsys.readouterr().err
    assert "nothing was sent" in err
    assert "line 2: not valid JSON" in err
    assert "line 3: type: unknown event type 'teleport'" in err


def test_a_good_file_is_produced(
    tmp_path: Path,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    _env(monkeypatch, settings)
    events = [event("page_view", f"u{i}", now(), page="home") for i in range(5)]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    assert main(["events", "send", str(path)]) == 0
    assert "sent 5 events" in capsys.readouterr().out
    consumer = KafkaConsumer(
        settings.events_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=2000,
    )
    got = {json.loads(r.value)["event_id"] for r in consumer}
    consumer.close()
    assert got == {e["event_id"] for e in events}
    assert os.environ["DECISIONS_EVENTS_TOPIC"] == settings.events_topic
