"""``decisions models …`` against real PostgreSQL and Redis."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from decisions.cli.commands.models import RETRAIN_LOCK
from decisions.cli.main import main
from decisions.core.settings import Settings
from decisions.runtime.archive import EventArchive
from decisions.runtime.ml import registry
from decisions.runtime.ml.synthetic import generate


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Settings:
    monkeypatch.setenv("DECISIONS_DATABASE_URL", str(settings.database_url))
    monkeypatch.setenv("DECISIONS_REDIS_URL", str(settings.redis_url))
    monkeypatch.setenv("DECISIONS_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("DECISIONS_LOG_LEVEL", "WARNING")
    return settings


@pytest.fixture
def recent_history(clean_db: Engine) -> datetime:
    """Three days of events ending now, in the archive."""
    now = datetime.now(UTC)
    events, _ = generate(users=220, days=3, seed=11, start=now - timedelta(days=3))
    EventArchive(clean_db).write_batch([e for e in events if e.ts < now])
    return now


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_with_no_versions(env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "list")
    assert code == 0 and "no model versions yet" in out


def test_train_list_promote_rollback_drift(
    env: Settings, recent_history: datetime, clean_db: Engine,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "models", "train", "purchase_intent", "--days", "3",
                         "--warmup-days", "0", "--algorithm", "logreg")
    assert code == 0, err
    assert "ROC AUC" in out and "precision" in out and "calibration" in out
    assert "promoted: now active" in out

    code, out, err = run(capsys, "models", "train", "purchase_intent", "--days", "3",
                         "--warmup-days", "0", "--algorithm", "logreg", "--no-promote", "--json")
    assert code == 0, err
    second = json.loads(out)
    assert second["version"] == 2 and second["promoted"] is False
    assert second["metrics"]["gate"]["passed"]  # same data, same figures: not worse

    code, out, _ = run(capsys, "models", "list", "--json")
    listed = json.loads(out)
    assert [(v["version"], v["active"]) for v in listed] == [(1, True), (2, False)]

    code, out, _ = run(capsys, "models", "promote", "purchase_intent", "2")
    assert code == 0 and "version 2 is active" in out
    code, out, _ = run(capsys, "models", "rollback", "purchase_intent")
    assert code == 0 and "version 1 is active" in out
    code, _, err = run(capsys, "models", "rollback", "purchase_intent")
    assert code == 1 and "no version older than 1" in err
    code, _, err = run(capsys, "models", "promote", "purchase_intent", "9")
    assert code == 1 and "no version 9" in err

    code, out, err = run(capsys, "models", "drift", "--json", "--warmup-days", "0")
    assert code == 0, err
    by_model = {r["model"]: r for r in json.loads(out)}
    assert by_model["churn_risk"]["status"] == "no active version"
    assert by_model["purchase_intent"]["rows"] > 100
    assert registry.last_drift(clean_db)["purchase_intent"]["version"] == 1


def test_retrain_is_safe_from_cron(
    env: Settings, recent_history: datetime, clean_db: Engine,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with clean_db.connect() as conn:  # another retrain holds the lock: do nothing, exit 0
        conn.execute(text("SELECT pg_advisory_lock(hashtext(:k))"), {"k": RETRAIN_LOCK})
        code, _, err = run(capsys, "models", "retrain", "--days", "3")
        conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": RETRAIN_LOCK})
    assert code == 0 and "another `models retrain` is running" in err
    assert registry.versions(clean_db) == []

    code, out, err = run(capsys, "models", "retrain", "purchase_intent", "churn_risk",
                         "--days", "3", "--warmup-days", "0", "--algorithm", "logreg",
                         "--churn-days", "2")
    assert "purchase_intent version 1" in out
    assert code == 1 and "churn_risk: not enough data" in err  # reported, the other went on
    assert registry.get(clean_db, "purchase_intent").version == 1


def test_bad_arguments_name_the_problem(env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["models", "drift", "nope"])
    assert "unknown model 'nope'" in capsys.readouterr().err
    code, _, err = run(capsys, "models", "train", "churn_risk", "--from", "2026-01-02",
                       "--to", "2026-01-01")
    assert code == 2 and "is not before" in err


def test_sample_history_gives_a_fresh_demo_something_to_train_on(
    env: Settings, clean_db: Engine, capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(capsys, "models", "sample-history", "--users", "30", "--days", "3")
    assert code == 2 and "pass --yes if that database is a scratch or demo one" in err
    code, out, err = run(capsys, "models", "sample-history", "--users", "30", "--days", "3",
                         "--seed", "5", "--yes")
    assert code == 0, err
    with clean_db.connect() as conn:
        count, users, newest = conn.execute(text(
            "SELECT count(*), count(DISTINCT user_id), max(ts) FROM events")).one()
    assert f"archived {count} generated events" in out and users <= 30 and count > 30
    assert all(u.startswith("u-5-") for u in conn_users(clean_db))
    assert newest <= datetime.now(UTC)
    assert "models train purchase_intent --days 3 --warmup-days 0" in out


def conn_users(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT DISTINCT user_id FROM events"))]
