"""Budgets (issue #19): validated by path, reserved atomically in real Redis by many
threads at once, never overshot, counted once per offer, given back, and resumed by a
higher limit. (Through two worker processes: tests/test_budget_workers.py.)"""

from __future__ import annotations

import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from admin.diffview import rule_changes
from admin.reports import budgets_left
from decisions.cli.main import main
from decisions.core.errors import ConfigError, ValidationError
from decisions.core.events import Event
from decisions.core.settings import Settings
from decisions.runtime.archive import EventArchive
from decisions.runtime.budgets import OK, BudgetStore, refusal
from decisions.runtime.engine import RuleEngine
from decisions.simulate.backtest import Backtest, Runner
from decisions.simulate.dryrun import dry_run
from decisions.simulate.trial import try_event
from rulesets.budget import Budget, budget_of, cost_cents
from rulesets.compile import compile_ruleset
from rulesets.diff import diff_documents, render, summary
from rulesets.store import RulesetStore
from rulesets.validate import validate
from tests.helpers import event, minutes, now, running_worker, wait_for
from tests.test_worker_support import fast, offer_ruleset, produce, publish

NOW = 1_800_000_000_000


def test_budgets_are_validated_by_path_and_compiled() -> None:
    doc = offer_ruleset("promo")
    doc["budget"] = {"amount": -5, "grant": 3}
    doc["rules"][0]["budget"] = {"campaign": "Bad Name"}
    with pytest.raises(ValidationError) as info:
        validate(doc)
    paths = {d.field for d in info.value.details}
    assert {"budget.amount", "budget.grant", "rules[0].budget",
            "rules[0].budget.campaign"} <= paths
    good = offer_ruleset("promo")
    good["budget"] = {"amount": 10000}
    good["rules"][0]["budget"] = {"grants": 50, "campaign": "bf-2026"}
    normal = validate(good)
    assert normal["budget"] == {"amount": 10000}
    assert normal["rules"][0]["budget"] == {"grants": 50, "campaign": "bf-2026"}
    compiled = compile_ruleset(normal, 1)
    assert compiled.budget == Budget("promo", 1_000_000, 0)
    assert compiled.rules["every-cart"].budget == Budget("bf-2026", 0, 50)
    assert "budget" not in validate(offer_ruleset("promo"))  # absent stays absent


def test_what_an_offer_costs_its_budget() -> None:
    assert cost_cents({"type": "amount", "value": 5}, 300) == 500
    assert cost_cents({"type": "percent", "value": 10}, 250.0) == 2500  # 10 % of the cart
    assert cost_cents({"type": "percent", "value": 10, "min_basket": 100}, 20) == 1000
    assert cost_cents({"type": "percent", "value": 10}, None) == 0
    assert budget_of({"amount": 0.1}, "x") == Budget("x", 10, 0)


def test_a_grant_budget_yields_exactly_its_grants_under_concurrency(
        redis_client: redis.Redis) -> None:
    """Eight threads try 200 offers against a ruleset budget of 37 grants and a rule
    budget of $500 at $10 each (50): exactly 37 are reserved, and a replay counts none."""
    store = BudgetStore(redis_client)
    budgets = (Budget("promo", 0, 37), Budget("promo/r", 50_000, 0))
    start = threading.Barrier(8)
    replies: list[str] = []

    def grant(worker: int) -> None:
        start.wait()
        for n in range(25):
            replies.append(store.reserve("promo", f"o-{worker}-{n}", 1000, budgets, NOW))

    threads = [threading.Thread(target=grant, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert replies.count(OK) == 37
    assert set(replies) == {OK, "grants:promo"}
    assert store.spent("promo") == {"promo|grants": 37, "promo|cents": 37_000,
                                    "promo/r|grants": 37, "promo/r|cents": 37_000}
    granted = sorted({f"o-{w}-{n}" for w in range(8) for n in range(25)})
    again = [store.reserve("promo", o, 1000, budgets, NOW) for o in granted]
    assert again.count("again") == 37 and again.count(OK) == 0  # replays count once
    # the money limit: raising the grants, the rule's $500 leaves 13 more at $10
    raised = (Budget("promo", 0, 1000), Budget("promo/r", 50_000, 0))
    more = [store.reserve("promo", f"m-{n}", 1000, raised, NOW) for n in range(20)]
    assert more.count(OK) == 13 and more[13] == "cents:promo/r"
    assert refusal(more[13], raised).startswith("budget spent: campaign promo/r")
    assert store.spent("promo")["promo/r|cents"] == 50_000  # never past the limit


def test_a_release_gives_a_reservation_back_once(redis_client: redis.Redis) -> None:
    store = BudgetStore(redis_client)
    budget = (Budget("solo", 0, 1),)
    assert store.reserve("solo", "a", 250, budget, NOW) == OK
    assert store.reserve("solo", "b", 250, budget, NOW) == "grants:solo"
    assert store.release("solo", "a", 250, budget, NOW)
    assert not store.release("solo", "a", 250, budget, NOW)  # idempotent
    assert store.spent("solo") == {"solo|grants": 0, "solo|cents": 0}
    assert store.reserve("solo", "b", 250, budget, NOW) == OK
    # a new campaign starts from nothing; the old one stays spent
    assert store.reserve("solo", "c", 250, (Budget("solo-2", 0, 1),), NOW) == OK
    assert store.reserve("solo", "d", 250, budget, NOW) == "grants:solo"
    doc = {"name": "solo", "budget": {"grants": 1},
           "rules": [{"name": "r", "budget": {"amount": 10, "campaign": "solo-2"}}]}
    left = BudgetStore(redis_client).remaining(doc)
    assert [r.to_dict()["left_grants"] for r in left] == [0, None]
    assert left[0].spent and "SPENT" in left[0].line()
    assert left[1].line() == "rule r (campaign solo-2): $7.50 of $10.00 left"


@hypothesis_settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.integers(1, 5000), costs=st.lists(st.integers(0, 900), max_size=40))
def test_a_money_budget_is_never_overshot(redis_client: redis.Redis, limit: int,
                                          costs: list[int]) -> None:
    store = BudgetStore(redis_client)
    redis_client.delete("d:budget:{budget:h}", "d:budres:{budget:h}")
    budget = (Budget("h", limit, 0),)
    taken = 0
    for i, cost in enumerate(costs):
        reply = store.reserve("h", f"o{i}", cost, budget, NOW)
        assert reply == (OK if taken + cost <= limit else "cents:h")
        taken += cost if reply == OK else 0
    assert store.spent("h").get("h|cents", 0) == taken <= limit


def test_the_worker_gives_back_what_the_offer_store_refuses(
        settings: Settings, clean_db: Engine, redis_client: redis.Redis) -> None:
    """Three carts a shopper: the rule's one active offer refuses the second and third in
    the offer store, after their budget was reserved; the worker gives those back."""
    settings = fast(settings)
    doc = offer_ruleset("promo")
    doc["budget"] = {"grants": 100, "amount": 1000}
    publish(settings, doc)
    t = now() - minutes(30)
    events = [event("add_to_cart", f"g-{u}", t + minutes(step), product_id="p", price=40.0,
                    quantity=1) for step in range(3) for u in range(10)]
    produce(settings, events)
    with running_worker(settings) as worker:
        wait_for(lambda: worker.stats.processed == len(events), timeout=60)
    spent = BudgetStore(redis_client).spent("promo")
    # 10 % of the cart: 40.00, 80.00, 120.00 at the three events; the first one is granted
    assert spent == {"promo|grants": 10, "promo|cents": 10 * 400}
    assert redis_client.zcard("d:budres:{budget:promo}") == 10


def test_report_budget_prints_what_is_left(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, services: dict[str, str],
        database_url: str, clean_db: Engine, redis_client: redis.Redis,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # no var/stack.json of a running stack is picked up
    monkeypatch.setenv("DECISIONS_DATABASE_URL", database_url)
    monkeypatch.setenv("DECISIONS_REDIS_URL", services["redis_url"])
    doc = offer_ruleset("promo")
    doc["budget"] = {"amount": 100, "grants": 2}
    doc["rules"][0]["budget"] = {"grants": 1}
    RulesetStore(clean_db).import_document(doc, "test", "test")
    BudgetStore(redis_client).reserve("promo", "o-1", 1250,
                                      (Budget("promo", 10_000, 2),
                                       Budget("promo/every-cart", 0, 1)), NOW)
    assert main(["report", "budget", "promo"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["ruleset (campaign promo): $87.50 of $100.00 left, 1 of 2 offers left",
                   "rule every-cart (campaign promo/every-cart): 0 of 1 offers left — SPENT: "
                   "the rule grants nothing until the budget is raised"]
    assert main(["report", "budget", "promo", "--json"]) == 0
    data = orjson.loads(capsys.readouterr().out)
    assert data[0]["left_amount"] == 87.5 and data[1]["spent"] is True
    assert main(["report", "budget", "nope"]) != 0


def test_a_backtest_reports_what_the_budget_would_have_allowed(
        clean_db: Engine, redis_client: redis.Redis) -> None:
    """Ten shoppers each put $50 in the cart, a minute apart: 10 % off is $5 each; a
    $32 budget covers six of the ten grants, and is spent by the seventh's minute."""
    t0 = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)
    EventArchive(clean_db).write_batch([
        Event(f"e-{i}", "add_to_cart", f"u-{i}", t0 + timedelta(minutes=i),
              {"product_id": "p", "price": 50.0, "quantity": 1}) for i in range(10)])
    doc = offer_ruleset("promo")
    doc["budget"] = {"amount": 32}
    doc["rules"][0]["budget"] = {"grants": 100, "campaign": "cart-grants"}
    run = Backtest("promo", "draft", t0 - timedelta(hours=1), t0 + timedelta(hours=1), "t")
    Runner(clean_db, redis_client, RuleEngine(), threading.Lock(), validate(doc))(run)
    assert run.status == "done", run.error
    tally = run.tallies["every-cart"]
    assert (tally.fires, tally.offers, tally.budget_refused) == (10, 6, 4)
    assert tally.discount == pytest.approx(30.0)
    lines = [b.line() for b in run.budgets.values()]
    assert lines == [
        "ruleset: budget promo ($32.00 of discount) would have covered 6 of 10 grants, "
        "spent by 2026-10-05 12:06 UTC",
        "rule every-cart: budget cart-grants (100 offers) would have covered 6 of 10 "
        "grants, not spent (94 offers left)"]


def test_dry_runs_and_try_it_honour_budgets(redis_client: redis.Redis) -> None:
    doc = offer_ruleset("promo")
    doc["budget"] = {"amount": 20, "campaign": "promo-q4"}
    cart = {"type": "add_to_cart", "user_id": "u-1",
            "properties": {"product_id": "p", "price": 150.0, "quantity": 1}}
    # nothing spent: 10 % of $150 fits in $20
    fits = dry_run(doc, cart, state={"cart_value": 150})
    assert len(fits.offers) == 1
    assert fits.to_dict()["budgets"]["every-cart"] == {
        "campaigns": ["promo-q4"], "cost": 15.0, "refused": ""}
    # $250 in the cart: $25 is more than the whole budget
    over = dry_run(doc, cart, state={"cart_value": 250})
    assert over.offers == [] and over.effects == []
    assert over.budgets["every-cart"]["refused"].startswith("budget spent: campaign promo-q4")
    # try-it reads what the live budget spent: $10 of $20 leaves no room for $15
    BudgetStore(redis_client).reserve("promo", "o-1", 1000, (Budget("promo-q4", 2000, 0),),
                                      NOW)
    tried = try_event(validate(doc), cart, {"state": {"cart_value": 150}},
                      datetime.now(UTC), client=redis_client)
    assert tried.offers == [] and tried.budgets["every-cart"]["refused"]
    assert BudgetStore(redis_client).spent("promo")["promo-q4|cents"] == 1000  # unchanged


def test_the_diff_lists_holdout_caps_and_budget_changes() -> None:
    before = offer_ruleset("promo")
    before["budget"] = {"amount": 1000}
    before["rules"][0]["holdout"] = {"share": 0.1}
    after = offer_ruleset("promo")
    after["budget"] = {"amount": 2500}
    after["caps"] = {"per_day": 1}
    after["rules"][0]["budget"] = {"grants": 10}
    d = diff_documents(validate(before), validate(after))
    assert d["settings"] == {"caps": {"before": None, "after": {"per_day": 1}},
                             "budget": {"before": {"amount": 1000}, "after": {"amount": 2500}}}
    (rule,) = d["changed"]
    assert set(rule["fields"]) == {"holdout", "budget"}
    text = render(d)
    assert "~ budget: {'amount': 1000} -> {'amount': 2500}" in text
    assert "    holdout: {'share': 0.1} -> None" in text
    assert "    budget: None -> {'grants': 10}" in text
    assert "budget" in summary(validate(before), validate(after))
    assert rule_changes(before, after)[:2] == [
        'caps: (none) → {"per_day": 1}', 'budget: {"amount": 1000} → {"amount": 2500}']


def test_the_admin_says_so_when_redis_cannot_tell_what_is_left() -> None:
    doc = {"name": "promo", "budget": {"grants": 3}, "rules": []}
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    left, error = budgets_left(lambda: redis.Redis(port=port, socket_connect_timeout=1), doc)
    assert left == [] and error.startswith("What is left of the budgets is unknown")

    def unconfigured() -> redis.Redis:
        raise ConfigError("the admin needs DECISIONS_REDIS_URL")

    assert budgets_left(unconfigured, doc)[1].endswith("(the admin needs DECISIONS_REDIS_URL).")
    assert budgets_left(unconfigured, {"name": "x", "rules": [{"name": "r"}]}) == ([], "")
