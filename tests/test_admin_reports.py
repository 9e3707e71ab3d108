"""Backtests over the event archive, per-rule performance, the chart, the diff, the CLI."""

from __future__ import annotations

import io
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import Engine, text

from admin import users
from admin.charts import bar_chart, trend_chart
from admin.diffview import rule_changes, side_by_side
from admin.reports import RulePerformance, daily, granted, performance
from decisions.cli import main as cli
from decisions.core.events import Event
from decisions.core.settings import Settings
from decisions.runtime.archive import EventArchive
from decisions.runtime.engine import RuleEngine
from decisions.simulate.backtest import Backtest, BacktestRegistry, Runner
from rulesets.document import read_file
from rulesets.validate import validate
from tests.helpers import STARTER

T0 = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)


def ev(etype: str, user: str, minute: float, **props: object) -> Event:
    return Event(uuid.uuid4().hex, etype, user, T0 + timedelta(minutes=minute), dict(props))


def starter_doc() -> dict:
    data, _ = read_file(STARTER)
    return validate(data)


def test_backtest_counts_users_offers_and_discount(clean_db: Engine,
                                                   redis_client: redis.Redis) -> None:
    EventArchive(clean_db).write_batch([
        # a: checkout, then the cart passes $200 (an offer: 10% of 250 = 25), grows while
        # the offer is valid (fires, no second offer), a checkout view after the offer
        # expired (a second offer: 10% of 260 = 26), then more while that one is valid
        ev("page_view", "a", 0, page="checkout"),
        ev("add_to_cart", "a", 1, product_id="p1", price=250.0, quantity=1),
        ev("add_to_cart", "a", 2, product_id="p2", price=10.0, quantity=1),
        ev("page_view", "a", 100, page="checkout"),
        ev("add_to_cart", "a", 101, product_id="p3", price=40.0, quantity=1),
        # b: cart over $200 but the checkout view was 10 minutes before: no offer
        ev("page_view", "b", 0, page="checkout"),
        ev("add_to_cart", "b", 10, product_id="p1", price=300.0, quantity=1),
        # outside the period
        ev("page_view", "c", -60 * 24 * 3, page="checkout"),
    ])
    run = Backtest("storefront", "version 1", T0 - timedelta(hours=1), T0 + timedelta(days=1),
                   "tester")
    Runner(clean_db, redis_client, RuleEngine(), threading.Lock(), starter_doc())(run)
    assert run.status == "done" and run.error == ""
    assert (run.processed, run.total, run.percent) == (7, 7, 100)
    hv = run.tallies["high-value-cart"]
    assert (hv.fires, hv.offers, len(hv.users)) == (4, 2, 1)
    assert hv.discount == pytest.approx(25.0 + 26.0)
    assert run.tallies["win-back"].fires == 0
    assert redis_client.keys(f"d:*bt-{run.id}-*") == []  # scratch state removed


def test_backtest_can_be_cancelled(clean_db: Engine, redis_client: redis.Redis) -> None:
    EventArchive(clean_db).write_batch(
        [ev("page_view", f"u{i}", i / 100, page="home") for i in range(1200)])
    run = Backtest("storefront", "draft", T0 - timedelta(hours=1), T0 + timedelta(days=1), "t")
    registry = BacktestRegistry()
    run.cancel.set()  # cancelled before it begins: it stops at the first event
    registry.start(run, Runner(clean_db, redis_client, RuleEngine(), threading.Lock(),
                               starter_doc()))
    deadline = datetime.now(UTC) + timedelta(seconds=10)
    while run.status == "running" and datetime.now(UTC) < deadline:
        threading.Event().wait(0.05)
    assert run.status == "cancelled" and run.processed < run.total == 1200
    assert registry.get(run.id) is run and registry.of_ruleset("storefront") == [run]


def test_performance_per_rule(clean_db: Engine) -> None:
    with clean_db.begin() as conn:
        for i, (rule, terms) in enumerate((
                ("high-value-cart", {"type": "percent", "value": 10}),
                ("high-value-cart", {"type": "percent", "value": 10}),
                ("win-back", {"type": "amount", "value": 5}))):
            conn.execute(text(
                "INSERT INTO decisions (action_id, user_id, event_id, ruleset, ruleset_version,"
                " rule, kind, payload, reason, decided_at, event_ts) VALUES (:a, :u, :e,"
                " 'storefront', 1, :r, 'offer', CAST(:p AS jsonb), '{}', :t, :t)"),
                {"a": f"o{i}", "u": f"u{i}", "e": f"e{i}", "r": rule, "t": T0,
                 "p": json.dumps({"discount": terms})})
        feedback = [("o0", "impression", None), ("o1", "impression", None),
                    ("o0", "redeem", 300.0), ("o2", "impression", None), ("o2", "redeem", 80.0)]
        for offer, kind, amount in feedback:
            rule = "win-back" if offer == "o2" else "high-value-cart"
            conn.execute(text(
                "INSERT INTO offer_feedback (offer_id, user_id, kind, rule, ruleset, amount, at)"
                " VALUES (:o, 'u', :k, :r, 'storefront', :m, :t)"),
                {"o": offer, "k": kind, "r": rule, "m": amount, "t": T0})
    rows = {r.rule: r for r in performance(clean_db, "storefront", T0 - timedelta(days=1),
                                           T0 + timedelta(days=1),
                                           ["high-value-cart", "win-back", "first-visit"])}
    hv = rows["high-value-cart"]
    assert (hv.fires, hv.offers, hv.impressions, hv.redemptions) == (2, 2, 2, 1)
    assert hv.conversion == 0.5 and hv.discount == pytest.approx(30.0)
    assert rows["win-back"].discount == 5.0 and rows["win-back"].conversion == 1.0
    assert rows["first-visit"].fires == 0 and rows["first-visit"].conversion is None
    assert granted({"type": "percent", "value": 10}, None) == 0.0
    day0 = datetime(2026, 10, 4, tzinfo=UTC)
    days = daily(clean_db, "storefront", day0, day0 + timedelta(days=3))
    assert [(d.day.isoformat(), d.fires, d.redemptions) for d in days] == [
        ("2026-10-04", 0, 0), ("2026-10-05", 3, 2), ("2026-10-06", 0, 0)]
    trend = trend_chart(days)
    assert [label for _, label in trend.labels] == ["Oct 4", "Oct 5", "Oct 6"]


def test_chart_scales_bars_to_the_largest_value() -> None:
    chart = bar_chart([RulePerformance("a", fires=50, impressions=25, redemptions=5),
                       RulePerformance("b", fires=10)])
    lengths = {b.title: b.width for b in chart.bars}
    assert lengths["a: 50 fires"] == pytest.approx(2 * lengths["a: 25 impressions"])
    assert lengths["a: 50 fires"] == pytest.approx(chart.width - 210 - 16)  # full width
    assert [label for _, label in chart.labels] == ["a", "b"]
    assert bar_chart([]).bars == []


def test_chart_with_many_rules_keeps_every_label_apart() -> None:
    rows = [RulePerformance(f"rule-with-a-rather-long-name-{i}", fires=i) for i in range(11)]
    chart = bar_chart(rows)
    ys = [t.y for t in chart.texts if t.css == "label end"]
    assert len(ys) == 11 and all(b - a >= 12 for a, b in zip(ys, ys[1:], strict=False))
    assert all(len(t.text) <= 30 for t in chart.texts if t.css == "label end")
    assert [name for _, name in chart.labels] == [r.rule for r in rows]  # full names kept
    bars = {(round(b.y), round(b.y + b.height)) for b in chart.bars}
    assert len(bars) == 33  # no two bars on top of each other


def test_side_by_side_diff_and_summary() -> None:
    before = starter_doc()
    after = validate({**before, "rules": [
        {**before["rules"][0], "priority": 120}, *before["rules"][2:]]})
    rows = side_by_side(before, after)
    changed = [r for r in rows if r.kind == "changed"]
    assert any("priority: 100" in r.left and "priority: 120" in r.right for r in changed)
    assert any(r.kind == "removed" for r in rows)
    assert rule_changes(before, after) == ["rule cart-abandonment removed",
                                           "rule high-value-cart: priority 100 → 120"]
    assert side_by_side(before, before) == []


def test_users_cli(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str], clean_db: Engine) -> None:
    monkeypatch.setenv("DECISIONS_DATABASE_URL", str(settings.database_url))
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert cli.main(["users", "create", "ada", "--role", "admin", "--password-stdin"]) == 0
    assert "created user ada (admin)" in capsys.readouterr().out
    assert users.verify(clean_db, "ada", "a-long-password") is not None
    assert users.verify(clean_db, "ada", "wrong") is None
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert cli.main(["users", "create", "ada", "--role", "viewer", "--password-stdin"]) == 1
    assert 'a user named "ada" already exists' in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.main(["users", "create", "bob", "--role", "editor", "--password-stdin"]) == 2
    assert "at least 8 characters" in capsys.readouterr().err
    assert cli.main(["users", "list"]) == 0
    out = capsys.readouterr().out
    assert "ada" in out and "admin" in out and "bob" not in out
