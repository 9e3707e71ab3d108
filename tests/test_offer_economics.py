"""Holdouts, frequency caps across rules and the uplift report (issue #19).

Through the real worker (Kafka, Redis, PostgreSQL): a held-out shopper is shown nothing
and the decision is recorded with its group; a synthetic stream with a known injected
conversion effect is recovered by the uplift report within its interval. The caps run
the offer store's Lua in real Redis from several threads at once."""

from __future__ import annotations

import random
import threading
from datetime import timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, text

from decisions.core.errors import ValidationError
from decisions.core.settings import Settings
from decisions.runtime.offers import OfferStore
from decisions.runtime.uplift import experiment_of, table, uplift
from decisions.simulate.dryrun import dry_run
from rulesets.holdout import CONTROL, TREATMENT, Holdout
from rulesets.validate import validate
from tests.helpers import event, minutes, now, running_worker, wait_for
from tests.test_worker_support import count, fast, offer_ruleset, produce, publish


def test_holdout_share_over_10000_shoppers_is_within_its_tolerance() -> None:
    holdout = Holdout(0.1, "hv-2026-11")
    held = sum(holdout.group(f"u-{i}") == CONTROL for i in range(10_000))
    # binomial(10000, 0.1): sd 30; 4 sd either side
    assert 880 <= held <= 1120
    # the same shopper, the same group, every time; a new experiment reshuffles
    again = Holdout(0.1, "hv-2026-11")
    assert all(holdout.group(f"u-{i}") == again.group(f"u-{i}") for i in range(1000))
    other = Holdout(0.1, "hv-2026-12")
    moved = sum(holdout.group(f"u-{i}") != other.group(f"u-{i}") for i in range(10_000))
    assert 1500 <= moved <= 2100  # independent draws: 2 * 0.1 * 0.9 = 18 %


def test_holdouts_and_caps_are_validated_by_path() -> None:
    doc = offer_ruleset("carts")
    doc["holdout"] = {"share": 10, "experimnet": "x"}
    doc["caps"] = {"per_day": 0.5}
    doc["rules"][0]["holdout"] = {"experiment": "Bad Name"}
    with pytest.raises(ValidationError) as info:
        validate(doc)
    paths = {d.field for d in info.value.details}
    assert {"holdout.share", "holdout.experimnet", "caps.per_day", "rules[0].holdout.share",
            "rules[0].holdout.experiment"} <= paths
    good = offer_ruleset("carts")
    good["holdout"] = {"share": 0.1}
    good["caps"] = {"per_day": 1, "per_week": 3}
    good["rules"][0]["holdout"] = {"share": 0.2, "experiment": "carts-2026-11"}
    normal = validate(good)
    assert normal["holdout"] == {"share": 0.1} and normal["caps"]["per_week"] == 3
    assert experiment_of(normal, None) == "carts"
    assert experiment_of(normal, "every-cart") == "carts-2026-11"
    assert "holdout" not in validate(offer_ruleset("carts"))  # absent stays absent


def test_dry_run_says_which_group_a_shopper_is_in() -> None:
    doc = offer_ruleset("carts")
    doc["rules"][0]["holdout"] = {"share": 0.5, "experiment": "try"}
    holdout = Holdout(0.5, "try")
    users = {holdout.group(f"u-{i}"): f"u-{i}" for i in range(50)}
    cart = {"type": "add_to_cart", "properties": {"product_id": "p", "price": 5.0,
                                                  "quantity": 1}}
    held = dry_run(doc, {**cart, "user_id": users[CONTROL]})
    assert held.fired == ["every-cart"] and held.offers == [] and held.effects == []
    assert held.holdouts["every-cart"]["experiments"] == {"try": CONTROL}
    assert "held out by experiment try" in held.holdouts["every-cart"]["held_out"]
    shown = dry_run(doc, {**cart, "user_id": users[TREATMENT]})
    assert len(shown.offers) == 1
    assert shown.to_dict()["holdouts"]["every-cart"] == {
        "experiments": {"try": TREATMENT}, "held_out": ""}


def _offer(ruleset: str, rule: str, n: int) -> dict[str, Any]:
    return {"offer_id": f"{ruleset}-{rule}-{n}", "rule": rule, "ruleset": ruleset,
            "expires_ms": 10**15, "priority": 0}


def test_frequency_caps_hold_across_rules_under_concurrency(redis_client: redis.Redis) -> None:
    """Eight threads offer one shopper 40 offers of four rules of two rulesets at once:
    the ruleset cap (1 a day) and the global cap (3 a week) leave exactly what they allow."""
    store = OfferStore(redis_client, per_day=0, per_week=3)
    now_ms = 1_800_000_000_000
    start = threading.Barrier(8)

    def offer(worker: int) -> None:
        start.wait()
        for n in range(5):
            ruleset = ("promo", "loyalty")[n % 2]
            rule = f"r{(worker + n) % 2}"
            caps = (1, 0) if ruleset == "promo" else (0, 0)
            store.store_offer(None, "u-cap", _offer(ruleset, rule, worker * 10 + n),
                              now_ms, 3600, caps)

    threads = [threading.Thread(target=offer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = [o.decode() for o in redis_client.hkeys("d:offers:{u-cap}")]
    assert len(stored) == 3  # the global weekly cap
    assert sum(o.startswith("promo-") for o in stored) <= 1  # the ruleset's daily cap
    # a day later the daily cap has room again, the weekly one still not
    later = now_ms + 86_400_000 + 1
    store.store_offer(None, "u-cap", _offer("promo", "r9", 999), later, 3600, (1, 0))
    assert redis_client.hlen("d:offers:{u-cap}") == 3
    # without a global cap a second promo offer the next day is allowed
    OfferStore(redis_client).store_offer(None, "u-cap2", _offer("promo", "a", 1), now_ms,
                                         3600, (1, 0))
    OfferStore(redis_client).store_offer(None, "u-cap2", _offer("promo", "b", 2), now_ms,
                                         3600, (1, 0))
    OfferStore(redis_client).store_offer(None, "u-cap2", _offer("promo", "b", 3), later,
                                         3600, (1, 0))
    assert sorted(k.decode() for k in redis_client.hkeys("d:offers:{u-cap2}")) == [
        "promo-a-1", "promo-b-3"]


def test_holdout_through_the_worker_and_the_uplift_report_recovers_a_known_effect(
        settings: Settings, clean_db: Engine, redis_client: redis.Redis) -> None:
    """1,200 shoppers each put something in the cart (the rule fires); half are held out.
    Treated shoppers then buy within a day with probability 0.35, held-out ones 0.20:
    an injected uplift of +15 points of conversion and +15.00 revenue per shopper."""
    settings = fast(settings)
    doc = offer_ruleset("carts")
    doc["rules"][0]["holdout"] = {"share": 0.5, "experiment": "uplift-19"}
    publish(settings, doc)
    holdout = Holdout(0.5, "uplift-19")
    rng = random.Random(19)
    t0 = now() - timedelta(hours=23)  # within the event contract's 48 h window
    events, groups = [], {}
    for i in range(1200):
        user = f"s-{i}"
        groups[user] = holdout.group(user)
        events.append(event("add_to_cart", user, t0 + minutes(i % 60), f"{user}-cart",
                            product_id="p-1", price=100.0, quantity=1))
        if rng.random() < (0.35 if groups[user] == TREATMENT else 0.20):
            events.append(event("purchase", user, t0 + timedelta(hours=20), f"{user}-buy",
                                order_id=f"o-{i}", total=100.0, items=[]))
    produce(settings, events)
    with running_worker(settings) as worker:
        wait_for(lambda: worker.stats.processed == len(events), timeout=120)
    # held-out shoppers were shown nothing; both groups are recorded the same way
    control = [u for u, g in groups.items() if g == CONTROL]
    treated = [u for u, g in groups.items() if g == TREATMENT]
    assert 500 <= len(control) <= 700
    assert not any(redis_client.exists(f"d:offers:{{{u}}}") for u in control[:50])
    assert all(redis_client.hlen(f"d:offers:{{{u}}}") == 1 for u in treated[:50])
    assert count(clean_db, "SELECT count(*) FROM decisions WHERE payload ? 'held_out'"
                 " AND payload -> 'experiments' ->> 'uplift-19' = 'control'") == len(control)
    assert count(clean_db, "SELECT count(*) FROM decisions WHERE NOT payload ? 'held_out'"
                 " AND payload -> 'experiments' ->> 'uplift-19' = 'treatment'") == len(treated)
    with clean_db.connect() as conn:
        reason = conn.execute(text("SELECT payload ->> 'held_out' FROM decisions WHERE"
                                   " user_id = :u"), {"u": control[0]}).scalar_one()
    assert reason == "held out by experiment uplift-19 (50% control group)"

    report = uplift(clean_db, "carts", "uplift-19", t0 - timedelta(hours=1), now(),
                    rule="every-cart", window_days=7)
    assert report.shoppers == {CONTROL: len(control), TREATMENT: len(treated)}
    conv = report.conversion_uplift
    assert conv.low is not None and conv.high is not None
    assert conv.low < 0.15 < conv.high and conv.low > 0
    rev = report.revenue_uplift
    assert rev.low is not None and rev.high is not None and rev.low < 15.0 < rev.high
    assert report.verdict == "uplift significant at 95 %"
    # no redemptions reported: nothing given away, so net equals revenue uplift
    assert report.discount_given == 0.0
    assert report.net_uplift_per_shopper.estimate == pytest.approx(rev.estimate)
    # a window that ends before the purchases sees none of them
    early = uplift(clean_db, "carts", "uplift-19", t0 - timedelta(hours=1), now(),
                   rule="every-cart", window_days=0.5)
    assert early.conversion == {CONTROL: 0.0, TREATMENT: 0.0}
    assert early.verdict == "not enough data yet"
    print("\n" + table(report))
