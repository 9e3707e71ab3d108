"""Marketer rules of docs/rules.md (#23) authored through the form builder in headless
Chromium (never the source view), fired in Try it, then published and fired through the
API, Kafka and the worker, with the stored decision's reason naming the values read:

1. free shipping over $50 (the free_shipping action);
2. a storewide holiday 20 % without conditions, its active window set in the form around
   now: it fires on any event inside the window, not outside;
3. once per user, ever (``max_per_user_ever: 1``): a second qualifying event after the
   first offer expired gets no second offer;
4. first visit ever (``state.first_visit_ever``);
5. a custom customer attribute loaded with ``PUT /v1/customers/{id}``: ``customer.plan``
   picked from the attributes customers carry, ``customer.seats`` typed in by name.

One browser session, one running worker. Screenshots go to ``var/screenshots/23-*.png``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, text
from starlette.testclient import TestClient

from api.app import create_app as create_api
from decisions.core import keys
from decisions.core.settings import Settings
from decisions.runtime import apikeys
from tests.helpers import event, minutes, now, running_worker, wait_for
from tests.test_admin_browser import browser, served, shot, sign_in  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


def _local(at: datetime) -> str:
    """A time as a ``datetime-local`` input takes it (UTC, to the minute)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def _decisions(engine: Engine, rule: str) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(text("SELECT user_id, event_id, reason, payload FROM decisions "
                                 "WHERE rule = :r ORDER BY user_id, event_id"),
                            {"r": rule}).all()


def _new_rule(page: Any, i: int, name: str, description: str, priority: int) -> str:
    page.get_by_role("link", name="Add a rule").click()
    p = f"#f-rules-{i}"
    page.locator(f"{p}-name").fill(name)
    page.locator(f"{p}-priority").fill(str(priority))
    page.locator(f"{p}-description").fill(description)
    return p


def _fill(page: Any, p: str, values: dict[str, str]) -> None:
    """Fill the rule's inputs by id (``then-0-discount-code`` under ``#f-rules-<i>``)."""
    for name, value in values.items():
        page.locator(f"{p}-{name}").fill(value)


def _add_condition(page: Any, p: str, n: int, field: str, op: str, value: str | None) -> None:
    page.get_by_role("button", name="+ Condition").first.click()
    row = f"{p}-when-all-{n}"
    page.wait_for_selector(f"{row}-field")
    page.locator(f"{row}-field").select_option(field)
    page.locator(f"{row}-op").select_option(op)
    if value is not None:
        value_input = page.locator(f"{row}-value")
        if value_input.evaluate("el => el.tagName") == "SELECT":
            value_input.select_option(value)
        else:
            value_input.fill(value)


def _save(page: Any, name: str) -> None:
    # by keyboard: on the page re-rendered with errors, Chrome scrolled the page between a
    # mouse click's press and release (the release then missed the button)
    page.get_by_role("button", name="Save draft").press("Enter")
    expect(page.get_by_text(f"Rule {name} saved to the draft")).to_be_visible()


def _author_free_shipping(page: Any) -> None:
    p = _new_rule(page, 1, "free-shipping-over-50", "Free shipping once the cart is $50",
                  30)
    _add_condition(page, p, 1, "state.cart_value", "gte", "50")
    # (a look at the recommendation's form on the way: its price is a choice)
    page.locator(f"{p}-then-0-kind").select_option("recommend")
    price = page.locator(f"{p}-then-0-recommend-price")
    assert price.evaluate("el => [el.tagName, [...el.options].map(o => o.value)]") == [
        "SELECT", ["", "cheaper", "similar"]]
    price.select_option("cheaper")
    shot(page, "23-b-editor-recommend-price")
    page.locator(f"{p}-then-0-kind").select_option("free_shipping")
    _fill(page, p, {
        "then-0-free_shipping-code": "SHIPFREE",
        "then-0-free_shipping-min_basket": "50",
        "then-0-free_shipping-expires_minutes": "1440",
    })
    expect(page.locator("#source")).to_have_value(re.compile(
        r"- free_shipping:\s+code: SHIPFREE\s+min_basket: 50\s+expires_minutes: 1440"))
    shot(page, "23-b-editor-free-shipping")
    _save(page, "free-shipping-over-50")


def _author_holiday(page: Any, start: datetime, end: datetime) -> None:
    p = _new_rule(page, 2, "storewide-20", "Holiday: 20 % on everything", 0)
    # no conditions: remove the one a new rule starts with
    page.locator('button[value="remove:rules[2].when.all[0]"]').click()
    expect(page.locator(f"{p}-when-all-0-field")).to_have_count(0)
    # the empty "When" says what it means
    expect(page.locator(".no-conditions")).to_contain_text("fires on every event")
    page.locator(f"{p}-active-from").fill(_local(start))
    page.locator(f"{p}-active-until").fill(_local(end))
    _fill(page, p, {
        "then-0-discount-_value": "20",
        "then-0-discount-code": "HOLIDAY20",
        "then-0-discount-expires_minutes": "1440",
    })
    expect(page.locator("#source")).to_have_value(re.compile(
        r"active:\s+from: '?" + _local(start) + r"(.|\n)*when:\s+all: \[\]"))
    shot(page, "23-b-editor-holiday")
    _save(page, "storewide-20")


def _author_once_ever(page: Any) -> None:
    p = _new_rule(page, 3, "first-order-bonus", "$10 off a first order, once per shopper ever",
                  10)
    _add_condition(page, p, 1, "state.order_count", "eq", "0")
    page.locator(f"{p}-then-0-discount-_type").select_option("amount")
    _fill(page, p, {
        "then-0-discount-_value": "10",
        "then-0-discount-code": "FIRST10",
        "then-0-discount-expires_minutes": "1440",
        "then-0-discount-max_per_user_ever": "1",
    })
    expect(page.locator("#source")).to_have_value(re.compile(r"max_per_user_ever: 1"))
    shot(page, "23-b-editor-once-ever")
    _save(page, "first-order-bonus")


def _author_first_visit(page: Any) -> None:
    p = _new_rule(page, 4, "welcome", "15 % on a shopper's first visit ever", 20)
    page.locator(f"{p}-when-all-0-value").select_option("page_view")
    _add_condition(page, p, 1, "state.first_visit_ever", "eq", "true")
    _fill(page, p, {
        "then-0-discount-_value": "15",
        "then-0-discount-code": "HELLO15",
        "then-0-discount-expires_minutes": "60",
        "then-0-discount-max_per_user_ever": "1",
    })
    expect(page.locator("#source")).to_have_value(re.compile(
        r"field: state.first_visit_ever\s+op: eq\s+value: true"))
    _save(page, "welcome")


def _author_pro_plan(page: Any) -> None:
    p = _new_rule(page, 5, "pro-teams", "Pro plan teams of 10 or more: 25 % on product pages",
                  40)
    page.locator(f"{p}-when-all-0-value").select_option("product_view")
    # customer.plan: offered by the picker, customers carry it
    _add_condition(page, p, 1, "customer.plan", "eq", "pro")
    # customer.seats: "another customer attribute", its name typed in
    page.get_by_role("button", name="+ Condition").first.click()
    row = f"{p}-when-all-2"
    page.wait_for_selector(f"{row}-field")
    expect(page.locator(f"{row}-attribute")).to_be_hidden()
    page.locator(f"{row}-field").select_option("customer.<attribute>")
    expect(page.locator(f"{row}-attribute")).to_be_visible()
    page.locator(f"{row}-attribute").fill("Seats")  # a bad name first
    page.locator(f"{row}-op").select_option("gte")
    page.locator(f"{row}-value").fill("10")
    page.get_by_role("button", name="Check and update source").click()
    expect(page.locator(".error-summary")).to_contain_text(
        '"Seats" is not a customer attribute name')
    shot(page, "23-b-editor-attribute-error")
    page.locator(f"{row}-attribute").fill("seats")
    _fill(page, p, {
        "then-0-discount-_value": "25",
        "then-0-discount-code": "PROTEAM25",
        "then-0-discount-expires_minutes": "1440",
    })
    expect(page.locator("#source")).to_have_value(re.compile(
        r"field: customer.plan\s+op: eq\s+value: pro\s+- field: customer.seats\s+op: gte"
        r"\s+value: 10"))
    shot(page, "23-b-editor-customer-attribute")
    _save(page, "pro-teams")


def _try(page: Any, etype: str, props: dict[str, str], user: str = "",
         profile: dict[str, Any] | None = None) -> None:
    page.locator("#t-user").fill(user)
    page.locator("#t-etype").select_option(etype)
    for name, value in props.items():
        page.locator(f"#t-{etype}-{name}").fill(value)
    page.locator("#t-profile").evaluate("el => { el.closest('details').open = true; }")
    page.locator("#t-profile").fill(json.dumps(profile or {}))
    page.get_by_role("button", name="Try it").click()


def _fired(page: Any, rule: str) -> str:
    card = page.locator(".card.fired", has_text=rule)
    expect(card).to_have_count(1)
    return " ".join(card.inner_text().split())


def test_marketer_rules_b_from_the_forms_to_kafka(
        browser: Any, served: str, settings: Settings,  # noqa: F811 - fixtures
        clean_db: Engine, redis_client: redis.Redis) -> None:
    base = served
    key, _ = apikeys.create_key(clean_db, "crm and shop",
                                ["events:write", "customers:write", "offers:read"])
    headers = {"Authorization": f"Bearer {key}"}
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    t = now()
    start, end = t - minutes(30), t + minutes(30)  # the holiday, around now
    with running_worker(settings) as worker, TestClient(create_api(settings)) as api:
        # the CRM's plans and seats, before the editor opens (its picker offers them)
        for user, record in (("pro-1", {"plan": "pro", "seats": 12}),
                             ("pro-small", {"plan": "pro", "seats": 3}),
                             ("basic-1", {"plan": "basic", "seats": 40})):
            put = api.put(f"/v1/customers/{user}", json=record, headers=headers)
            assert put.status_code == 201, put.text

        sign_in(page, base, "ada")
        page.goto(base + "/rulesets/storefront")
        _author_free_shipping(page)
        _author_holiday(page, start, end)
        _author_once_ever(page)
        _author_first_visit(page)
        _author_pro_plan(page)
        shot(page, "23-b-ruleset")
        rows = {name: " ".join(page.locator("tr", has_text=name).inner_text().split())
                for name in ("storewide-20", "first-order-bonus", "free-shipping-over-50")}
        assert "Every event (no conditions)" in rows["storewide-20"], rows
        assert "$10.00 off (code FIRST10); at most 1 per shopper, ever" in \
            rows["first-order-bonus"], rows
        assert "Free shipping on orders of $50.00 or more (code SHIPFREE)" in \
            rows["free-shipping-over-50"], rows

        # -- Try it: each fires and names the values it read ---------------------------
        page.get_by_role("link", name="Try it").click()
        _try(page, "add_to_cart", {"product_id": "p-1", "price": "60", "quantity": "1"},
             profile={"state": {"cart_value": 60}})
        words = _fired(page, "free-shipping-over-50")
        assert "Cart value ≥ 50 — is 60" in words, words
        assert "Would offer free shipping on orders of $50.00 or more with code SHIPFREE" in \
            words, words
        shot(page, "23-b-try-it-free-shipping")
        words = _fired(page, "first-order-bonus")
        assert "Orders placed is 0 — is 0" in words and "FIRST10" in words, words
        words = _fired(page, "storewide-20")  # no conditions, now is in its window
        assert "No conditions: it fires on every event while it is active" in words
        assert "20% off" in words and "HOLIDAY20" in words, words
        _try(page, "page_view", {"page": "home"})
        words = _fired(page, "welcome")
        assert "First visit ever (the user's first session we saw) is true — is true" in \
            words and "HELLO15" in words, words
        shot(page, "23-b-try-it-first-visit")
        _try(page, "product_view", {"product_id": "p-1"}, user="pro-1")
        words = _fired(page, "pro-teams")
        assert "customer.plan is pro — is pro" in words, words
        assert "customer.seats ≥ 10 — is 12" in words and "PROTEAM25" in words, words
        shot(page, "23-b-try-it-customer-attribute")
        _try(page, "product_view", {"product_id": "p-1"}, user="pro-small")
        expect(page.locator(".card.fired", has_text="pro-teams")).to_have_count(0)
        # outside its window the holiday rule does not fire
        page.locator("#t-now").fill(_local(end + minutes(5)) + ":00")
        _try(page, "search", {"query": "socks"})
        expect(page.locator(".card.fired", has_text="storewide-20")).to_have_count(0)
        page.locator("summary", has_text="would not fire").click()
        assert "Outside its active window" in page.locator(
            ".card.not-fired", has_text="storewide-20").inner_text()
        shot(page, "23-b-try-it-holiday-outside")

        # -- publish, then through the API, Kafka and the worker -------------------------
        page.goto(base + "/rulesets/storefront")
        page.get_by_label("Comment").fill("Marketer rules: shipping, holiday, once, welcome, pro")
        page.get_by_role("button", name="Publish draft").click()
        expect(page.get_by_text("Published storefront version 2")).to_be_visible()
        wait_for(lambda: "storefront:2" in (worker.runtime.marker or ""), timeout=20)

        events = [
            # (1) a $60 cart: free shipping (a $20 one does not)
            event("add_to_cart", "ship-1", t - minutes(50), "ship-1-cart", product_id="p-1",
                  price=60.0, quantity=1),
            event("add_to_cart", "ship-2", t - minutes(50), "ship-2-cart", product_id="p-2",
                  price=20.0, quantity=1),
            # (2) inside the window: a search and a product view; outside: a product view
            event("search", "holiday-1", t - minutes(5), "holiday-1-search", query="socks"),
            event("product_view", "holiday-2", t - minutes(10), "holiday-2-view",
                  product_id="p-3"),
            event("product_view", "holiday-3", t - minutes(45), "holiday-3-view",
                  product_id="p-3"),
            # (3) two qualifying carts 29 hours apart: the first offer (a day) expired
            event("add_to_cart", "once-1", t - minutes(60 * 30), "once-1-a", product_id="p-4",
                  price=20.0, quantity=1),
            event("add_to_cart", "once-1", t - minutes(60), "once-1-b", product_id="p-4",
                  price=20.0, quantity=1),
            # (4) a first visit; a returning one (first seen 40 hours ago)
            event("page_view", "new-1", t - minutes(40), "new-1-visit", page="home"),
            event("page_view", "old-1", t - minutes(60 * 40), "old-1-first", page="home"),
            event("page_view", "old-1", t - minutes(40), "old-1-again", page="home"),
            # (5) pro with 12 seats fires; pro with 3 and basic with 40 do not
            *[event("product_view", user, t - minutes(40), f"{user}-view", product_id="p-5")
              for user in ("pro-1", "pro-small", "basic-1")],
        ]
        before = worker.stats.processed
        sent = api.post("/v1/events", json=events, headers=headers)
        assert sent.status_code == 202, sent.text
        wait_for(lambda: worker.stats.processed >= before + len(events), timeout=30)

        def served_offers(user: str) -> list[dict[str, Any]]:
            got = api.get(f"/v1/users/{user}/offers", headers=headers)
            assert got.status_code == 200, got.text
            return list(got.json()["offers"])

        # (1) free shipping
        ship = _decisions(clean_db, "free-shipping-over-50")
        assert [(d.user_id, d.event_id) for d in ship] == [("ship-1", "ship-1-cart")]
        assert ship[0].reason == {"event.type": "add_to_cart", "state.cart_value": 60}
        # (offers do not stack in this ruleset: the highest priority one is served)
        assert [(o["kind"], o["free_shipping"]) for o in served_offers("ship-1")] == [
            ("free_shipping", {"code": "SHIPFREE", "min_basket": 50})]
        # (2) the holiday: any event inside its window, none outside
        holiday = _decisions(clean_db, "storewide-20")
        assert [(d.user_id, d.event_id) for d in holiday] == [
            ("holiday-1", "holiday-1-search"), ("holiday-2", "holiday-2-view")]
        assert holiday[0].reason == {}  # no conditions: nothing read
        assert [o["discount"]["code"] for o in served_offers("holiday-2")] == ["HOLIDAY20"]
        assert served_offers("holiday-3") == []
        # (3) once per user, ever: the second cart, after the first offer expired, is
        # decided but gets no offer
        once = _decisions(clean_db, "first-order-bonus")
        assert [d.event_id for d in once if d.user_id == "once-1"] == ["once-1-a", "once-1-b"]
        assert once[0].reason == {"event.type": "add_to_cart", "state.order_count": 0}
        stored = redis_client.hgetall(keys.offers("once-1"))
        assert [json.loads(v)["event_id"] for v in stored.values()] == ["once-1-a"]
        assert int(redis_client.hget(keys.offers_ever("once-1"),
                                     "storefront/first-order-bonus")) == 1
        assert served_offers("once-1") == []  # the first expired, no second one
        # (4) first visit ever
        welcome = _decisions(clean_db, "welcome")
        assert [(d.user_id, d.event_id) for d in welcome] == [
            ("new-1", "new-1-visit"), ("old-1", "old-1-first")]
        assert welcome[0].reason == {"event.type": "page_view", "state.first_visit_ever": True}
        assert [o["discount"]["code"] for o in served_offers("new-1")] == ["HELLO15"]
        assert served_offers("old-1") == []  # its first visit's offer (an hour) expired
        # (5) the custom attributes
        pro = _decisions(clean_db, "pro-teams")
        assert [(d.user_id, d.event_id) for d in pro] == [("pro-1", "pro-1-view")]
        assert pro[0].reason == {"event.type": "product_view", "customer.plan": "pro",
                                 "customer.seats": 12}
        assert [o["discount"]["code"] for o in served_offers("pro-1")] == ["PROTEAM25"]
        assert served_offers("pro-small") == served_offers("basic-1") == []
    for rule in ("free-shipping-over-50", "storewide-20", "first-order-bonus", "welcome",
                 "pro-teams"):
        print(f"\n{rule} reason:", json.dumps(_decisions(clean_db, rule)[0].reason))
    context.close()
    assert timedelta(0) < end - start
