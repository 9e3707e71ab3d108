"""Custom customer attributes in rules (#23): ``customer.<name>`` for any attribute the CRM
loads (``PUT /v1/customers/{id}``, ``decisions customers import``), validated by name,
typed by the condition's value, offered by the form builder's field picker, and read by
the worker, Try it's dry run and backtests, with the value in the stored reason."""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from admin import forms
from decisions.core.errors import ValidationError
from decisions.core.events import parse_event
from decisions.core.settings import Settings
from decisions.runtime.customer_records import parse_record, upsert
from decisions.runtime.customers import seen_attributes
from decisions.runtime.kafka import ensure_topics
from decisions.simulate.dryrun import dry_run
from rulesets.language import ANY, field_type
from rulesets.store import RulesetStore
from rulesets.validate import validate
from tests.api_helpers import KeyMaker, auth
from tests.helpers import event, minutes, now, running_worker, wait_for
from tests.test_admin_fixtures import *  # noqa: F403 - fixtures
from tests.test_admin_fixtures import form_fields
from tests.test_worker_rules import decided
from tests.test_worker_support import fast, produce, publish

pytest_plugins = ["tests.api_fixtures"]
SignIn = Callable[[str], tuple[TestClient, str]]


def _ruleset(*conditions: dict[str, Any], name: str = "plans") -> dict[str, Any]:
    return {"name": name, "rules": [{"name": "pro-perk", "when": {"all": [
        {"field": "event.type", "op": "eq", "value": "page_view"}, *conditions]},
        "then": [{"discount": {"percent": 10, "code": "PRO10", "expires_minutes": 60}}]}]}


def _problems(*conditions: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        validate(_ruleset(*conditions))
    return {d.field: d.message for d in info.value.details}


def test_any_attribute_name_is_a_field_typed_by_the_value() -> None:
    assert field_type("customer.plan") == ANY
    assert field_type("customer.tier") == "string"  # the catalog's own stay typed
    for cond in ({"field": "customer.plan", "op": "eq", "value": "pro"},
                 {"field": "customer.orders_2025", "op": "gte", "value": 3},
                 {"field": "customer.newsletter", "op": "eq", "value": True},
                 {"field": "customer.plan", "op": "in", "value": ["pro", "team"]},
                 {"field": "customer.plan", "op": "exists"},
                 {"field": "customer.company", "op": "contains", "value": "GmbH"}):
        validate(_ruleset(cond))
    where = "rules[0].when.all[1]"
    assert _problems({"field": "customer.Plan", "op": "eq", "value": "pro"}) == {
        f"{where}.field": '"Plan" is not a customer attribute name: lowercase letters, '
                          "digits and _, starting with a letter (up to 41)"}
    assert _problems({"field": "customer.signup_date", "op": "eq", "value": "x"}) == {
        f"{where}.field": "customer.signup_date is not readable by rules: use "
                          "customer.signup_days (days since signup)"}
    assert _problems({"field": "customer.<attribute>", "op": "eq", "value": "x"}) == {
        f"{where}.field": "type the customer attribute's name (e.g. plan for customer.plan)"}
    assert _problems({"field": "customer.plan", "op": "gt", "value": "pro"}) == {
        f"{where}.op": '"gt" does not apply to customer.plan compared with a string '
                       "(give a number)"}
    assert _problems({"field": "customer.plan", "op": "in", "value": ["pro", 3]}) == {
        f"{where}.value[1]": "expected a string, got 3"}
    assert _problems({"field": "customer.plan", "op": "eq", "value": ["pro"]}) == {
        f"{where}.value": "expected a number, a string or true/false, got ['pro']"}


@pytest.mark.parametrize(("customer", "fired"), [
    ({"plan": "pro", "seats": 12}, ["big-team", "pro-perk"]),
    ({"plan": "basic", "seats": 12}, ["big-team", "not-pro"]),
    # values of another type than the condition's never match, negated or not
    # (durable_rules alone would compare "12" > 10 as a number)
    ({"plan": 7, "seats": "12"}, []),
    ({}, []),
])
def test_the_engine_and_the_explanation_agree_on_attribute_types(
        customer: dict[str, Any], fired: list[str]) -> None:
    document = {"name": "plans", "rules": [
        {"name": name, "when": {"all": [cond]}, "then": [{"add_segment": {"segment": name}}]}
        for name, cond in (
            ("pro-perk", {"field": "customer.plan", "op": "eq", "value": "pro"}),
            ("not-pro", {"not": {"field": "customer.plan", "op": "eq", "value": "pro"}}),
            ("big-team", {"field": "customer.seats", "op": "gt", "value": 10}))]}
    result = dry_run(document, {"type": "page_view", "user_id": "u-1",
                                "properties": {"page": "home"}}, customer=customer)
    assert sorted(m.rule for m in result.matches) == fired
    explained = sorted(t.rule for t in result.rules if t.conditions["result"])
    assert explained == fired
    for match in result.matches:
        field = {"pro-perk": "customer.plan", "not-pro": "customer.plan",
                 "big-team": "customer.seats"}[match.rule]
        assert match.reason == {field: customer[field[9:]]}


def _load(engine: Engine, *records: dict[str, Any]) -> None:
    parsed = []
    for data in records:
        record, errors = parse_record(data)
        assert record is not None, errors
        parsed.append(record)
    upsert(engine, parsed)


def test_the_picker_offers_the_attributes_customers_carry(clean_db: Engine) -> None:
    _load(clean_db, {"user_id": "c-1", "plan": "pro", "seats": 12, "newsletter": True},
          {"user_id": "c-2", "plan": "basic", "seats": "many", "lifetime_value": 10})
    assert seen_attributes(clean_db) == {"lifetime_value": "number", "newsletter": "boolean",
                                         "plan": "string", "seats": "any"}
    shown = forms.picker_fields(seen_attributes(clean_db))
    assert shown["customer.plan"].label == "plan (customer attribute)"
    assert "customer.lifetime_value" in shown and shown["customer.lifetime_value"].type == \
        "number"  # the catalog's entry, not a second one
    assert shown["customer.<attribute>"].type == ANY


def test_the_form_builder_writes_and_names_custom_attributes(
        signed_in: SignIn, starter: RulesetStore, clean_db: Engine) -> None:
    _load(clean_db, {"user_id": "c-1", "plan": "pro"})
    client, _ = signed_in("editor")
    page = client.get("/rulesets/storefront/rules/0").text
    assert "plan (customer attribute)" in page
    assert "Other customer attribute…" in page
    fields = form_fields(page)
    fields.update({"rules[0].when.all[0].field": "customer.plan",
                   "rules[0].when.all[0].op": "eq", "rules[0].when.all[0].value": "pro"})
    shown = client.post("/rulesets/storefront/rules/0",
                        data={**fields, "action": "update_source"}).text
    assert "field: customer.plan\n" in html.unescape(shown)
    assert "value: pro" in html.unescape(shown)
    # another attribute, typed by name: a number reads as one, text in quotes as text
    fields.update({"rules[0].when.all[0].field": "customer.<attribute>",
                   "rules[0].when.all[0].attribute": "seats",
                   "rules[0].when.all[0].op": "gte", "rules[0].when.all[0].value": "10"})
    shown = html.unescape(client.post("/rulesets/storefront/rules/0",
                                      data={**fields, "action": "update_source"}).text)
    assert "field: customer.seats\n" in shown and "value: 10\n" in shown
    after = form_fields(shown)
    assert after["rules[0].when.all[0].field"] == "customer.<attribute>"
    assert after["rules[0].when.all[0].attribute"] == "seats"
    # a bad name: the error sits with the field, naming it
    fields["rules[0].when.all[0].attribute"] = "Seats!"
    answer = client.post("/rulesets/storefront/rules/0", data={**fields, "action": "save"})
    assert answer.status_code == 422
    assert ('Condition 1: field</a>: "Seats!" is not a customer attribute name'
            in html.unescape(answer.text))


def test_recommend_price_is_a_select_of_its_choices(signed_in: SignIn,
                                                    starter: RulesetStore) -> None:
    client, _ = signed_in("editor")
    page = client.get("/rulesets/storefront/rules/0").text
    start = page.index('name="rules[0].then[0].recommend.price"')
    select = page[page.rindex("<", 0, start):page.index("</select>", start)]
    assert select.startswith("<select")
    assert [v for v in ("cheaper", "similar") if f'value="{v}"' in select] == [
        "cheaper", "similar"]


def test_a_backtest_reads_custom_attributes(clean_db: Engine, redis_client: Any) -> None:
    from decisions.runtime.archive import EventArchive
    from decisions.runtime.engine import RuleEngine
    from decisions.simulate.backtest import Backtest, Runner

    _load(clean_db, {"user_id": "bt-pro", "plan": "pro"}, {"user_id": "bt-basic",
                                                          "plan": "basic"})
    t0 = now() - timedelta(hours=2)
    EventArchive(clean_db).write_batch([parse_event(e) for e in (
        event("page_view", user, t0 + timedelta(minutes=i), page="home")
        for i, user in enumerate(("bt-pro", "bt-basic")))])
    document = _ruleset({"field": "customer.plan", "op": "eq", "value": "pro"})
    run = Backtest("plans", "draft", t0 - timedelta(hours=1), now(), "test")
    Runner(clean_db, redis_client, RuleEngine(), threading.Lock(), document)(run)
    assert run.status == "done", run.error
    assert (run.tallies["pro-perk"].fires, run.tallies["pro-perk"].users) == (1, {"bt-pro"})


def test_the_worker_decides_on_an_attribute_put_through_the_api(
        settings: Settings, clean_db: Engine, client: TestClient,
        make_key: KeyMaker) -> None:
    settings = fast(settings)
    publish(settings, _ruleset({"field": "customer.plan", "op": "eq", "value": "pro"},
                               {"field": "customer.seats", "op": "gte", "value": 10}))
    ensure_topics(settings)
    crm = auth(make_key("customers:write"))
    for user, plan in (("u-pro", "pro"), ("u-basic", "basic")):
        put = client.put(f"/v1/customers/{user}", json={"plan": plan, "seats": 12},
                         headers=crm)
        assert put.status_code == 201, put.text
    t = now() - minutes(5)
    produce(settings, [event("page_view", user, t, f"{user}-1", page="home")
                       for user in ("u-pro", "u-basic")])
    with running_worker(settings) as worker:
        wait_for(lambda: worker.stats.processed == 2)
    rows = decided(clean_db)
    assert [(r.user_id, r.rule) for r in rows] == [("u-pro", "pro-perk")]
    assert rows[0].reason == {"event.type": "page_view", "customer.plan": "pro",
                              "customer.seats": 12}
    offers = client.get("/v1/users/u-pro/offers", headers=auth(make_key())).json()["offers"]
    assert [o["discount"]["code"] for o in offers] == ["PRO10"]
