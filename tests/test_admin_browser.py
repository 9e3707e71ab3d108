"""The marketer's flows end to end in headless Chromium against a real served admin.

Sign in, build the high-value-cart rule with the form builder (seeing and fixing a
validation error), try it against an event, publish, see the running worker use the new
version (its offer appears in Redis), roll back (the offer no longer fires), run a
backtest, and look at history, diff, audit and performance. A screenshot of each main
page goes to ``var/screenshots/``.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import uvicorn
from sqlalchemy import Engine, text
from starlette.testclient import TestClient

from admin.app import create_app
from admin.users import create_user
from api.app import create_app as create_api
from decisions.cli.stack.process import free_port, port_open
from decisions.core.settings import Secret, Settings
from decisions.runtime import apikeys
from decisions.runtime.kafka import Producer
from decisions.runtime.offers import active_offers
from rulesets.document import read_file
from rulesets.store import RulesetStore
from tests.helpers import STARTER, event, minutes, now, running_worker, wait_for

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = Path(__file__).resolve().parent.parent / "var" / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def served(settings: Settings, clean_db: Engine) -> Iterator[str]:
    """The admin served by uvicorn in a thread; the store holds version 1 (win-back only)."""
    admin_settings = replace(settings, secret_key=Secret("browser-test-secret"))
    for name, role in (("maria", "editor"), ("paul", "publisher"), ("ada", "admin")):
        create_user(clean_db, name, f"{name}-password", role)
    data, _ = read_file(STARTER)
    data["rules"] = [r for r in data["rules"] if r["name"] == "win-back"]
    RulesetStore(clean_db).import_document(data, "seed", "first version: win-back only")
    app = create_app(admin_settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not port_open("127.0.0.1", port):
        assert time.monotonic() < deadline, "admin server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    app.state.admin.close()


UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter(el => el.type !== 'hidden' && !(el.labels && el.labels.length)
                && !el.getAttribute('aria-label'))
  .map(el => el.name || el.id)"""


def shot(page: Any, name: str) -> None:
    """Screenshot the page, and check that every input on it has a label."""
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    assert page.evaluate(UNLABELLED) == [], name


def sign_in(page: Any, base: str, username: str) -> None:
    page.goto(base + "/")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(f"{username}-password")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(base + "/")


def produce_cart(settings: Settings, user: str) -> None:
    t0 = now() - minutes(3)
    producer = Producer(settings)
    producer.send_many(settings.events_topic, [(e["user_id"], e) for e in (
        event("page_view", user, t0, page="checkout"),
        event("add_to_cart", user, t0 + minutes(1), product_id="p-1", price=250.0,
              quantity=1, category="shoes"),
    )])
    producer.close()


def offers_of(client: redis.Redis, user: str) -> list[dict[str, Any]]:
    return active_offers(client, user, datetime.now().astimezone())


def archived(engine: Engine, user: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM events WHERE user_id = :u"),
                                {"u": user}).scalar_one())


def test_marketer_flow(browser: Any, served: str, settings: Settings, clean_db: Engine,
                       redis_client: redis.Redis) -> None:
    base = served
    context = browser.new_context(viewport={"width": 1366, "height": 860})
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.on("dialog", lambda dialog: dialog.accept())
    with running_worker(settings) as worker:
        # -- sign in -----------------------------------------------------------------
        page.goto(base + "/")
        assert "/login" in page.url
        shot(page, "01-sign-in")
        # from the keyboard alone: the user name has the focus; Tab, type, Enter
        page.keyboard.type("maria")
        page.keyboard.press("Tab")
        page.keyboard.type("maria-password")
        page.keyboard.press("Enter")
        page.wait_for_url(base + "/")
        expect(page.get_by_text("Signed in as maria (editor)")).to_be_visible()
        shot(page, "02-rulesets")

        # -- build high-value-cart with the form builder -----------------------------
        page.get_by_role("link", name="storefront").click()
        page.get_by_role("link", name="Add a rule").click()
        p = "#f-rules-1"
        page.locator(f"{p}-name").fill("High value cart")
        page.locator(f"{p}-description").fill("Cart over $200 and a recent checkout view")
        page.locator(f"{p}-priority").fill("100")
        page.locator(f"{p}-when-all-0-op").select_option("in")
        page.locator(f"{p}-when-all-0-value").fill("add_to_cart, page_view")
        page.evaluate("window.samePage = true")
        page.get_by_role("button", name="+ Condition").click()
        page.wait_for_selector(f"{p}-when-all-1-field")
        # added in place by editor.js (no reload), with the focus on the new field picker
        assert page.evaluate("window.samePage === true")
        assert page.evaluate("document.activeElement.id") == "f-rules-1-when-all-1-field"
        # the field picker's search box narrows ~90 fields to the matches (new rows too)
        search = page.locator(f"{p}-when-all-1 .field-search")
        search.fill("cart val")
        assert page.locator(f"{p}-when-all-1-field").input_value() == "state.cart_value"
        visible = page.eval_on_selector(
            f"{p}-when-all-1-field",
            "s => [...s.options].filter(o => !o.hidden && !o.parentNode.hidden).length")
        assert 1 <= visible < 5
        page.locator(f"{p}-when-all-1-field").select_option("state.cart_value")
        page.locator(f"{p}-when-all-1-op").select_option("gt")
        page.locator(f"{p}-when-all-1-value").fill("200")
        page.get_by_role("button", name="+ Condition").click()
        page.locator(f"{p}-when-all-2-field").select_option("state.since_page_checkout")
        page.locator(f"{p}-when-all-2-op").select_option("within")
        page.locator(f"{p}-when-all-2-value").fill("300")
        page.locator(f"{p}-then-0-discount-_value").fill("10")
        page.locator(f"{p}-then-0-discount-code").fill("CART10")
        page.locator(f"{p}-then-0-discount-expires_minutes").fill("60")
        # the source follows the form (editor.js asks the server to render it)
        expect(page.locator("#source")).to_have_value(re.compile("CART10"))
        page.get_by_role("button", name="Save draft").click()

        # -- the validation error sits next to the rule name; fix it -------------------
        error = page.locator(f"{p}-name-error")
        assert "lowercase letters" in error.inner_text()
        assert page.locator(f"{p}-name").get_attribute("aria-invalid") == "true"
        shot(page, "03-editor-validation-error")
        page.locator(f"{p}-name").fill("high-value-cart")
        page.get_by_role("button", name="Save draft").click()
        page.wait_for_url(base + "/rulesets/storefront")
        expect(page.get_by_text("Rule high-value-cart saved to the draft")).to_be_visible()
        shot(page, "04-ruleset-with-draft")
        page.get_by_role("link", name="Edit high-value-cart").click()
        shot(page, "05-rule-editor")

        # -- try it ----------------------------------------------------------------------
        page.get_by_role("link", name="storefront", exact=True).click()
        page.get_by_role("link", name="Try it").click()
        page.get_by_role("button", name="Try it").click()
        hit = page.locator(".card.fired")
        assert "high-value-cart" in hit.inner_text()
        assert "Cart value > 200 — is 250" in hit.inner_text()
        assert "10% off" in hit.inner_text()
        shot(page, "06-try-it")
        assert offers_of(redis_client, "u-try") == []  # no side effect

        # -- an editor cannot publish; a publisher can -----------------------------------
        page.get_by_role("link", name="Rules", exact=True).click()
        assert page.get_by_role("button", name="Publish draft").count() == 0
        page.get_by_role("button", name="Sign out").click()
        sign_in(page, base, "paul")
        page.goto(base + "/rulesets/storefront")
        page.get_by_label("Comment").fill("Add the high-value cart offer")
        page.get_by_role("button", name="Publish draft").click()
        expect(page.get_by_text("Published storefront version 2")).to_be_visible()
        shot(page, "07-history")

        # -- the running worker uses version 2 -------------------------------------------
        wait_for(lambda: "storefront:2" in (worker.runtime.marker or ""), timeout=15)
        produce_cart(settings, "u-v2")
        offers = wait_for(lambda: offers_of(redis_client, "u-v2"), timeout=30)
        assert offers[0]["rule"] == "high-value-cart"
        assert offers[0]["ruleset_version"] == 2
        assert offers[0]["discount"]["code"] == "CART10"
        # and the storefront gets it through the API
        key, _ = apikeys.create_key(clean_db, "browser test", ["offers:read"])
        with TestClient(create_api(settings)) as api:
            served_offers = api.get("/v1/users/u-v2/offers",
                                    headers={"Authorization": f"Bearer {key}"}).json()
        assert [(o["rule"], o["ruleset_version"]) for o in served_offers["offers"]] == [
            ("high-value-cart", 2)]

        # -- backtest version 2 over today's stored events (the worker archived them) -----
        wait_for(lambda: archived(clean_db, "u-v2") == 2, timeout=15)
        page.get_by_role("link", name="Backtest").click()
        page.get_by_role("button", name="Run backtest").click()
        page.wait_for_selector("h2:has-text('Results')", timeout=20_000)
        row = page.locator("table.numbers tbody tr", has_text="high-value-cart")
        cells = row.locator("td").all_inner_texts()
        assert cells == ["high-value-cart", "1", "1", "1", "25.00"]  # 10% of a $250 cart
        shot(page, "09-backtest")

        # -- diff, then roll back to version 1 -------------------------------------------
        page.get_by_role("link", name="History").click()
        page.get_by_role("link", name="Diff with 1").first.click()
        expect(page.get_by_text("rule high-value-cart added")).to_be_visible()
        shot(page, "08-diff")
        page.get_by_role("link", name="History").click()
        page.get_by_role("button", name="Roll back to version 1").click()
        expect(page.get_by_text("Rolled back: version 3")).to_be_visible()
        wait_for(lambda: "storefront:3" in (worker.runtime.marker or ""), timeout=15)
        before = worker.stats.processed
        produce_cart(settings, "u-v3")
        wait_for(lambda: worker.stats.processed >= before + 2, timeout=30)
        assert offers_of(redis_client, "u-v3") == []

    # -- audit log, performance, not-found page -----------------------------------------
    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("User").select_option("paul")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.list tbody tr")
    assert rows.count() == 2  # publish and rollback
    shot(page, "10-audit")
    page.goto(base + "/rulesets/storefront/performance")
    expect(page.locator("table.numbers").get_by_text("high-value-cart")).to_be_visible()
    shot(page, "11-performance")
    page.goto(base + "/rulesets/nope")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    shot(page, "12-not-found")
    page.goto(base + "/users")  # a publisher is not an admin
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    shot(page, "13-forbidden")
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, base, "ada")
    page.get_by_role("link", name="Users").click()
    expect(page.get_by_role("cell", name="maria", exact=True)).to_be_visible()
    shot(page, "14-users")
    context.close()
