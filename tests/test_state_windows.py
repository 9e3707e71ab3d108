"""Counts and recency per product, category and page over any window, in event time (#23).

The state script's values are checked against a Python reference over generated event
sequences that arrive out of order (a late event counts where it belongs in event time).
"""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decisions.core.events import parse_event
from decisions.runtime.state import StateStore, replay_features, wanted_features
from rulesets.language import field_type, window_ms, windowed
from tests.helpers import event, now

T0 = datetime(2026, 12, 1, tzinfo=UTC)
WINDOWS = ("1m", "10m", "2h", "24h")
FEATURES = [
    *(f"state.count_{t}_{w}_this_product" for t in ("product_view", "click") for w in WINDOWS),
    *(f"state.count_product_view_{w}_this_category" for w in WINDOWS),
    "state.count_product_view_10m_category_running-shoes",
    "state.count_add_to_cart_10m", "state.count_add_to_cart_10m_this_product",
    "state.since_product_view_this_product", "state.since_product_view_this_category",
    "state.since_click_product_p-1", "state.since_same_product_view",
]


def _apply(store: StateStore, raw: dict[str, Any]) -> dict[str, Any]:
    return store.apply_batch([parse_event(raw)])[0].snapshot


def test_same_product_counts_and_the_previous_view(redis_client: redis.Redis) -> None:
    store = StateStore(redis_client)
    store.wanted = wanted_features(FEATURES)
    t = now() - timedelta(hours=30)
    first = _apply(store, event("product_view", "u1", t, product_id="p-1", category="shoes"))
    # a first view: nothing before it (missing, so no comparison matches it)
    assert "since_same_product_view" not in first
    assert "since_product_view_this_product" not in first
    assert first["count_product_view_24h_this_product"] == 1
    second = _apply(store, event("product_view", "u1", t + timedelta(hours=7), product_id="p-1",
                                 category="shoes"))
    assert second["since_same_product_view"] == 7 * 3600  # the view before, not itself
    assert second["count_product_view_24h_this_product"] == 2
    other = _apply(store, event("product_view", "u1", t + timedelta(hours=8), product_id="p-2",
                                category="shoes"))
    assert other["count_product_view_24h_this_product"] == 1
    assert other["count_product_view_24h_this_category"] == 3
    assert other["since_product_view_this_category"] == 3600
    third = _apply(store, event("product_view", "u1", t + timedelta(hours=26), product_id="p-1",
                                category="shoes"))
    assert third["count_product_view_24h_this_product"] == 2  # the first left the window
    assert third["since_same_product_view"] == 19 * 3600
    # an add_to_cart reads the last view of its product (and counts none of its own type)
    cart = _apply(store, event("add_to_cart", "u1", t + timedelta(hours=26, minutes=5),
                               product_id="p-1", category="shoes", price=10.0, quantity=1))
    assert cart["since_same_product_view"] == 300
    assert cart["count_add_to_cart_10m"] == 1
    assert cart["count_add_to_cart_10m_this_product"] == 1


def test_running_shoes_in_ten_minutes_without_add_to_cart(redis_client: redis.Redis) -> None:
    store = StateStore(redis_client)
    store.wanted = wanted_features(FEATURES)
    t = now() - timedelta(minutes=30)
    for i in range(3):
        snap = _apply(store, event("product_view", "u2", t + timedelta(minutes=3 * i),
                                   product_id=f"rs-{i}", category="running-shoes"))
    assert snap["count_product_view_10m_category_running-shoes"] == 3
    assert snap["count_add_to_cart_10m"] == 0
    # a view elsewhere still reads the named category's count
    snap = _apply(store, event("product_view", "u2", t + timedelta(minutes=9), product_id="x",
                               category="hats"))
    assert snap["count_product_view_10m_category_running-shoes"] == 3
    assert snap["count_product_view_10m_this_category"] == 1


def test_events_without_a_product_read_no_product_scope(redis_client: redis.Redis) -> None:
    store = StateStore(redis_client)
    store.wanted = wanted_features(FEATURES)
    snap = _apply(store, event("page_view", "u3", now(), page="home"))
    assert "count_product_view_24h_this_product" not in snap
    assert snap["count_product_view_10m_category_running-shoes"] == 0
    assert "since_same_product_view" not in snap


def test_spec_names_the_scoped_features() -> None:
    spec = wanted_features(["state.count_product_view_24h_this_product",
                            "state.count_add_to_cart_10m", "state.since_page_view",
                            "state.since_click_category_bags", "state.since_same_product_view"])
    assert spec.split(",") == sorted([
        "n:count_product_view_24h_this_product:product_view:86400000:tp:",
        "n:count_add_to_cart_10m:add_to_cart:600000::", "s:page_view",
        "r:since_click_category_bags:click:c:bags", "sp"])
    assert replay_features(["state.count_product_view_24h_this_product"]).startswith("*,n:")
    assert field_type("state.count_product_view_31d") is None  # the log keeps 30 days
    assert field_type("state.count_product_view_30d_this_page") == "number"
    assert windowed("since_page_checkout") is None and window_ms("90m") == 5_400_000


# -- the property: the script's counts equal a reference, whatever the arrival order --------
_EVENT = st.tuples(
    st.sampled_from(["product_view", "click", "add_to_cart"]),
    st.sampled_from(["p-1", "p-2", "p-3"]),
    st.sampled_from(["shoes", "running-shoes"]),
    st.integers(min_value=0, max_value=30 * 3600),  # seconds after T0: spans the windows
)
_run = itertools.count()


def _reference(seen: list[tuple[str, str, str, int]], cur: tuple[str, str, str, int],
               name: str) -> Any:
    etype, product, category, at = cur
    w = windowed(name[len("state."):])
    if name == "state.since_same_product_view":
        before = [s[3] for s in seen if s[1] == product and s[0] in ("product_view", "click")
                  and s[3] < at]
        return (at - max(before)) if before else None
    assert w is not None
    scope_value = {"this_product": product, "this_category": category, "": None}.get(
        w.scope, w.value)
    pos = 1 if w.scope in ("this_product", "product") else 2

    def matches(s: tuple[str, str, str, int]) -> bool:
        return s[0] == w.type and (scope_value is None or s[pos] == scope_value)

    if w.kind == "count":
        return sum(1 for s in seen if matches(s) and at - w.window_ms // 1000 <= s[3] <= at)
    before = [s[3] for s in seen if matches(s) and s[3] < at]
    return (at - max(before)) if before else None


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(_EVENT, min_size=1, max_size=25))
def test_counts_equal_a_reference_in_event_time(redis_client: redis.Redis,
                                                events: list[tuple[str, str, str, int]]) -> None:
    store = StateStore(redis_client)
    store.wanted = wanted_features(FEATURES)
    user = f"h-{next(_run)}-{uuid.uuid4().hex[:6]}"
    seen: list[tuple[str, str, str, int]] = []
    for i, cur in enumerate(events):  # in generated order: out of event-time order
        etype, product, category, at = cur
        props: dict[str, Any] = {"product_id": product, "category": category}
        if etype == "add_to_cart":
            props.update(price=1.0, quantity=1)
        elif etype == "click":
            props.update(element="product-card")
        snap = _apply(store, event(etype, user, T0 + timedelta(seconds=at), f"{user}-{i}",
                                   **props))
        seen.append(cur)
        for name in FEATURES:
            want = _reference(seen, cur, name)
            got = snap.get(name[len("state."):])
            assert got == want, (name, cur, seen)


def test_try_it_on_a_live_profile_counts_this_product(redis_client: redis.Redis) -> None:
    from decisions.simulate.dryrun import dry_run_live

    store = StateStore(redis_client)
    t = now() - timedelta(hours=5)
    for i in range(2):
        _apply(store, event("product_view", "u-try", t + timedelta(hours=i), product_id="p-1",
                            category="shoes"))
    ruleset = {"name": "seen-thrice", "rules": [{
        "name": "third-view", "when": {"all": [
            {"field": "event.type", "op": "eq", "value": "product_view"},
            {"field": "state.count_product_view_24h_this_product", "op": "gte", "value": 3}]},
        "then": [{"discount": {"percent": 10}}]}]}
    before = {k: redis_client.dump(k) for k in redis_client.keys("*")}
    view = {"type": "product_view", "properties": {"product_id": "p-1", "category": "shoes"}}
    result = dry_run_live(redis_client, "u-try", ruleset, view, now=t + timedelta(hours=3))
    assert result.fired == ["third-view"]
    assert result.fact["state.count_product_view_24h_this_product"] == 3
    assert result.fact["state.since_same_product_view"] == 2 * 3600  # the previous view
    assert {k: redis_client.dump(k) for k in redis_client.keys("*")} == before
    other = dry_run_live(redis_client, "u-try", ruleset,
                         {**view, "properties": {"product_id": "p-2"}},
                         now=t + timedelta(hours=3))
    assert other.fired == []
    assert "state.since_same_product_view" not in other.fact  # never viewed before


def test_the_log_stays_bounded_and_keeps_the_newest(redis_client: redis.Redis) -> None:
    from decisions.core import keys

    store = StateStore(redis_client)
    store.wanted = wanted_features(FEATURES)
    t = now() - timedelta(days=2)
    views = [parse_event(event("product_view", "u-busy", t + timedelta(seconds=i), f"b-{i}",
                               product_id=f"p-{i % 7}", category="shoes"))
             for i in range(1600)]  # 3,200 entries: product and category each
    last = store.apply_batch(views)[-1].snapshot
    size = redis_client.zcard(keys.scoped_log("u-busy"))
    assert 2000 <= size <= 3000
    assert int(redis_client.hget(keys.state("u-busy"), "sx_n")) == size
    # the newest are all there: the last 10 minutes (inclusive) hold 601 views
    assert last["count_product_view_10m_this_category"] == 601
    assert last["count_product_view_10m_this_product"] == sum(
        1 for i in range(999, 1600) if i % 7 == 1599 % 7)
    assert last["since_same_product_view"] == 7


def test_a_backtest_counts_per_product_and_caps_ever(redis_client: redis.Redis,
                                                     clean_db: Any) -> None:
    import threading

    from decisions.runtime.archive import EventArchive
    from decisions.runtime.engine import RuleEngine
    from decisions.simulate.backtest import Backtest, Runner

    t0 = now() - timedelta(hours=3)
    EventArchive(clean_db).write_batch([parse_event(e) for e in (
        event("product_view", "bt-1", t0 + timedelta(minutes=i), product_id="p-1")
        for i in range(4))])
    document = {"name": "bt", "rules": [
        {"name": "third-view", "when": {"all": [
            {"field": "event.type", "op": "eq", "value": "product_view"},
            {"field": "state.count_product_view_24h_this_product", "op": "gte", "value": 3}]},
         "then": [{"discount": {"percent": 10, "expires_minutes": 0.5,
                                "max_per_user_ever": 1}}]},
        {"name": "seen-before", "when": {"all": [
            {"field": "event.type", "op": "eq", "value": "product_view"},
            {"field": "state.since_same_product_view", "op": "within", "value": 60}]},
         "then": [{"add_segment": {"segment": "again"}}]}]}
    run = Backtest("bt", "draft", t0 - timedelta(hours=1), now(), "test")
    Runner(clean_db, redis_client, RuleEngine(), threading.Lock(), document)(run)
    assert run.status == "done", run.error
    third, seen = run.tallies["third-view"], run.tallies["seen-before"]
    assert (third.fires, third.offers, third.capped) == (2, 1, 1)  # views 3 and 4; once ever
    assert seen.fires == 3  # every view but the first (the previous one, 60 s before)


def test_page_counts_and_recency(redis_client: redis.Redis) -> None:
    store = StateStore(redis_client)
    store.wanted = wanted_features(["state.count_page_view_1h_page_checkout",
                                    "state.count_page_view_1h_this_page",
                                    "state.since_page_view_this_page"])
    t = now() - timedelta(hours=3)
    for minute, page in ((0, "checkout"), (100, "checkout"), (130, "home"), (150, "checkout")):
        snap = _apply(store, event("page_view", "u-pg", t + timedelta(minutes=minute), page=page))
    assert snap["count_page_view_1h_page_checkout"] == 2  # minutes 100 and 150
    assert snap["count_page_view_1h_this_page"] == 2
    assert snap["since_page_view_this_page"] == 50 * 60
    other = _apply(store, event("page_view", "u-pg", t + timedelta(minutes=151), page="home"))
    assert other["count_page_view_1h_page_checkout"] == 2
    assert other["count_page_view_1h_this_page"] == 2
    assert other["since_page_view_this_page"] == 21 * 60


def test_the_log_expires_a_month_after_its_last_use(redis_client: redis.Redis) -> None:
    from decisions.core import keys

    store = StateStore(redis_client)
    _apply(store, event("product_view", "u-ttl", now() - timedelta(days=3), product_id="p-1"))
    ttl = redis_client.pttl(keys.scoped_log("u-ttl"))
    assert 31 * 86_400_000 < ttl <= 32 * 86_400_000
    redis_client.pexpire(keys.scoped_log("u-ttl"), 1_000_000)
    _apply(store, event("product_view", "u-ttl", now() - timedelta(days=2, hours=23),
                        product_id="p-1"))
    assert redis_client.pttl(keys.scoped_log("u-ttl")) <= 1_000_000  # moved once a day
    _apply(store, event("product_view", "u-ttl", now(), product_id="p-1"))
    assert redis_client.pttl(keys.scoped_log("u-ttl")) > 31 * 86_400_000
