"""Try it (on pasted input and on a picked user's live profile) and backtests over HTTP."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import timedelta

import redis
from starlette.testclient import TestClient

from decisions.core.events import parse_event
from decisions.runtime.archive import EventArchive
from decisions.runtime.offers import OfferStore
from decisions.runtime.state import StateStore
from rulesets.store import RulesetStore
from tests.helpers import event, minutes, now
from tests.test_admin_fixtures import *  # noqa: F403 - fixtures
from tests.test_admin_fixtures import post

SignIn = Callable[[str], tuple[TestClient, str]]


def keys_and_values(client: redis.Redis) -> dict[bytes, object]:
    out: dict[bytes, object] = {}
    for key in client.scan_iter("*"):
        kind = client.type(key)
        out[key] = client.dump(key) if kind != b"none" else None
    return out


def _checkout_then_cart(redis_client: redis.Redis, user: str) -> None:
    """A live profile: the checkout viewed, then a $240 cart."""
    t0 = now() - minutes(3)
    history = [event("page_view", user, t0, page="checkout"),
               event("add_to_cart", user, t0 + minutes(1), product_id="p-1", price=240.0,
                     quantity=1)]
    StateStore(redis_client).apply_batch([parse_event(e) for e in history])


def _try_small_cart(client: TestClient, token: str, user: str) -> str:
    """Try it: the published storefront on a $15 cart event of ``user`` (live profile)."""
    response = post(client, "/rulesets/storefront/try", token, which="published",
                    user_id=user, now=now().strftime("%Y-%m-%dT%H:%M:%S"),
                    event=json.dumps({"type": "add_to_cart", "properties": {
                        "product_id": "p-2", "price": 15.0, "quantity": 1}}),
                    profile="")
    assert response.status_code == 200, response.text[-3000:]
    return response.text


def test_try_it_on_a_picked_users_live_profile(signed_in: SignIn, starter: RulesetStore,
                                               redis_client: redis.Redis) -> None:
    _checkout_then_cart(redis_client, "u-7")
    before = keys_and_values(redis_client)
    client, token = signed_in("viewer")
    html = _try_small_cart(client, token, "u-7")
    assert "1</strong> rule would fire" in html
    # 240 + 15: the live cart plus this event
    assert re.search(r'Cart value</span>\s*&gt; 200\s*<span class="actual">— is <strong>255<',
                     html)
    assert "with code <strong>CART10</strong>" in html
    # read only: not one key of Redis changed, none was left behind
    assert keys_and_values(redis_client) == before


def test_try_it_on_a_shopper_says_when_their_offers_and_caps_refuse_the_offer(
        signed_in: SignIn, starter: RulesetStore, redis_client: redis.Redis) -> None:
    """The shopper already holds an active offer of the rule: the offer store would refuse
    a second, so Try it shows no offer and says why (and writes nothing)."""
    _checkout_then_cart(redis_client, "u-8")
    held = {"offer_id": "o-held", "ruleset": "storefront", "rule": "high-value-cart",
            "kind": "discount", "discount": {"type": "percent", "value": 10},
            "priority": 10, "stackable": True,
            "expires_ms": int((now() + timedelta(hours=1)).timestamp() * 1000)}
    OfferStore(redis_client).store_offer(redis_client, "u-8", held,
                                         int(time.time() * 1000), 3600)
    before = keys_and_values(redis_client)
    client, token = signed_in("viewer")
    html = _try_small_cart(client, token, "u-8")
    assert "1</strong> rule would fire" in html
    assert ("Rule high-value-cart: its offer would not be granted to u-8: an offer of this "
            "rule is still active.") in html
    assert "the shopper would see" not in html  # (u-7, holding none, is shown CART10 above)
    assert keys_and_values(redis_client) == before


def test_try_it_reports_bad_input_next_to_its_box(signed_in: SignIn,
                                                  starter: RulesetStore) -> None:
    client, token = signed_in("viewer")
    bad_json = post(client, "/rulesets/storefront/try", token, which="published",
                    event="{nope", profile="", now="")
    assert bad_json.status_code == 422 and 'id="t-event-error"' in bad_json.text
    bad_field = post(client, "/rulesets/storefront/try", token, which="published",
                     event=json.dumps({"type": "add_to_cart", "properties": {
                         "product_id": "p", "price": "cheap", "quantity": 1}}),
                     profile=json.dumps({"state": {"cart_vlue": 3}}), now="")
    assert bad_field.status_code == 422
    assert "event.properties.price" in bad_field.text or "cart_vlue" in bad_field.text
    no_draft = post(client, "/rulesets/storefront/try", token, which="draft",
                    event="{}", profile="", now="")
    assert no_draft.status_code == 422 and "there is no draft" in no_draft.text


def test_backtest_over_http_with_progress(signed_in: SignIn, starter: RulesetStore,
                                          clean_db, redis_client: redis.Redis) -> None:
    t0 = now() - timedelta(hours=2)
    EventArchive(clean_db).write_batch([parse_event(e) for e in (
        event("page_view", "b-1", t0, page="checkout"),
        event("add_to_cart", "b-1", t0 + minutes(1), product_id="p", price=300.0, quantity=1),
    )])
    client, token = signed_in("editor")
    day = t0.date().isoformat()
    started = post(client, "/rulesets/storefront/backtest/start", token, **{"from": day,
                                                                            "to": day})
    assert started.status_code == 303
    run_url = started.headers["location"]
    deadline = time.monotonic() + 15
    status = client.get(run_url + "/status").json()
    while status["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
        status = client.get(run_url + "/status").json()
    assert status == {**status, "status": "done", "processed": 2, "total": 2, "percent": 100}
    page = client.get(run_url).text
    assert "<td>high-value-cart</td><td>1</td><td>1</td><td>1</td><td>30.00</td>" in page
    assert run_url.rsplit("/", 1)[1] in client.get("/rulesets/storefront/backtest").text
    # a period ending before it starts is refused with a message
    bad = post(client, "/rulesets/storefront/backtest/start", token, **{"from": day,
                                                                        "to": "2000-01-01"})
    assert "Choose a period" in client.get(bad.headers["location"]).text


def test_try_it_with_the_event_form_puts_fired_rules_first(signed_in: SignIn,
                                                           starter: RulesetStore) -> None:
    client, token = signed_in("viewer")
    page = client.get("/rulesets/storefront/try").text
    assert 'name="prop.add_to_cart.price"' in page and "Add to cart</option>" in page
    response = post(client, "/rulesets/storefront/try", token, which="published",
                    source="form", etype="add_to_cart", user_id="u-form",
                    **{"prop.add_to_cart.product_id": "p-1", "prop.add_to_cart.price": "250",
                       "prop.add_to_cart.quantity": "1"},
                    profile=json.dumps({"state": {"cart_value": 250,
                                                  "since_page_checkout": 60}}),
                    now=now().strftime("%Y-%m-%dT%H:%M:%S"))
    assert response.status_code == 200, response.text[-2000:]
    html = response.text
    fired = html.index("high-value-cart <span class=\"badge ok\">fires")
    quiet = html.index('<details class="card quiet-rules">')
    assert fired < quiet  # the rules that fire come first; the others folded below
    assert re.search(r"4 rules would not fire: cart-abandonment, viewed-then-added, "
                     r"win-back, first-visit-welcome", html.replace("\n", " "))
    # a required property missing is named next to its input
    missing = post(client, "/rulesets/storefront/try", token, which="published",
                   source="form", etype="add_to_cart", profile="", now="",
                   **{"prop.add_to_cart.product_id": "p-1", "prop.add_to_cart.price": "x"})
    assert missing.status_code == 422
    assert 'id="t-prop.add_to_cart.price-error">a number' in missing.text
    assert 'id="t-prop.add_to_cart.quantity-error">required' in missing.text


def test_try_it_on_a_shoppers_last_event(signed_in: SignIn, starter: RulesetStore,
                                         clean_db) -> None:
    t0 = now() - minutes(2)
    EventArchive(clean_db).write_batch([parse_event(e) for e in (
        event("page_view", "u-real", t0, page="home"),
        event("search", "u-real", t0 + minutes(1), query="red shoes"))])
    client, token = signed_in("viewer")
    assert '<option value="u-real">' in client.get("/rulesets/storefront/try").text
    response = post(client, "/rulesets/storefront/try", token, which="published",
                    source="last", user_id="u-real", profile="", now="")
    assert response.status_code == 200, response.text[-2000:]
    assert "Event search of u-real" in response.text
    unknown = post(client, "/rulesets/storefront/try", token, which="published",
                   source="last", user_id="nobody", profile="", now="")
    assert unknown.status_code == 422 and "no archived event of nobody" in unknown.text


def test_marks_inside_not_show_each_conditions_own_truth(signed_in: SignIn,
                                                         starter: RulesetStore) -> None:
    doc = starter.get_version("storefront").document
    doc["rules"].append({"name": "not-recent", "priority": 1, "when": {"all": [
        {"field": "event.type", "op": "eq", "value": "add_to_cart"},
        {"not": {"field": "state.since_page_checkout", "op": "within", "value": 600}}]},
        "then": [{"discount": {"percent": 1}}]})
    starter.save_draft(doc, "seed")
    client, token = signed_in("viewer")
    response = post(client, "/rulesets/storefront/try", token, which="draft",
                    event=json.dumps({"type": "add_to_cart", "properties": {
                        "product_id": "p-1", "price": 10.0, "quantity": 1}}),
                    profile=json.dumps({"state": {"since_page_checkout": 120.123456}}),
                    now="")
    html = " ".join(response.text.split())
    start = html.index("not-recent <span")
    card = html[start:html.index("</div>", start)]
    # the not does not hold (the checkout was 120 s ago) ...
    assert '<li class="no"><span class="mark" aria-hidden="true">✗</span>' \
           '<span class="sr-only"> (does not hold)</span> none of this (not)' in card
    # ... because its condition holds: ✓, with the value rounded
    assert re.search(r'<li class="ok"><span class="mark" aria-hidden="true">✓</span>.*'
                     r"within \(seconds\) 600.*is <strong>120.12</strong>", card)


def test_event_form_parsing() -> None:
    from admin import tryform

    event_, errors = tryform.event_from_form({
        "etype": "purchase", "prop.purchase.order_id": "o-1", "prop.purchase.total": "200",
        "prop.purchase.items": "p-1, 120, 1\np-2, 80, 1"}, "u-1")
    assert errors == {}
    assert event_ == {"type": "purchase", "user_id": "u-1", "properties": {
        "order_id": "o-1", "total": 200.0, "items": [
            {"product_id": "p-1", "price": 120.0, "quantity": 1},
            {"product_id": "p-2", "price": 80.0, "quantity": 1}]}}
    assert tryform.form_values(event_)["prop.purchase.items"] == "p-1, 120.0, 1\np-2, 80.0, 1"
    _, errors = tryform.event_from_form({"etype": "purchase", "prop.purchase.items": "p-1"}, "")
    assert errors["prop.purchase.items"] == "each line: product id, price, quantity"
    assert errors["prop.purchase.order_id"] == "required"
