"""The rule editor: form <-> document without loss, errors next to their inputs,
structural edits, the source view in both directions, optimistic concurrency."""

from __future__ import annotations

import html
import re
from collections.abc import Callable

import pytest
import yaml
from starlette.testclient import TestClient

from admin import forms
from rulesets.document import read_file
from rulesets.store import RulesetStore
from tests.helpers import STARTER
from tests.test_admin_fixtures import *  # noqa: F403 - fixtures
from tests.test_admin_fixtures import form_fields, post

SignIn = Callable[[str], tuple[TestClient, str]]


@pytest.mark.parametrize("index", range(len(read_file(STARTER)[0]["rules"])))
def test_form_round_trip_keeps_every_starter_rule(signed_in: SignIn, starter: RulesetStore,
                                                  index: int) -> None:
    """What the editor renders, posted back as a browser without JS would, is the rule."""
    client, _ = signed_in("editor")
    page = client.get(f"/rulesets/storefront/rules/{index}")
    assert page.status_code == 200
    fields = form_fields(page.text)
    response = client.post(f"/rulesets/storefront/rules/{index}",
                           data={**fields, "action": "save"})
    assert response.status_code == 303, response.text[:3000]
    published = starter.get_version("storefront").document
    draft = starter.draft("storefront")
    assert draft is not None and draft.updated_by == "editor"
    assert draft.document == published


def test_validation_errors_sit_next_to_their_inputs(signed_in: SignIn,
                                                    starter: RulesetStore) -> None:
    client, _ = signed_in("editor")
    fields = form_fields(client.get("/rulesets/storefront/rules/0").text)
    fields["rules[0].name"] = "High value cart"
    fields["rules[0].when.all[1].value"] = "lots"  # state.cart_value is a number
    fields["rules[0].then[0].discount._value"] = "150"  # percent above 100
    response = client.post("/rulesets/storefront/rules/0", data={**fields, "action": "save"})
    assert response.status_code == 422
    html = response.text
    for path, words in (("rules-0-name", "lowercase letters"),
                        ("rules-0-when-all-1-value", "expected a number, got &#34;lots&#34;"),
                        ("rules-0-then-0-discount-percent", "at most 100")):
        start = html.index(f'id="f-{path}-error"')
        assert words in html[start:start + 300], path
    # the input is marked invalid and points at its message
    assert 'aria-describedby="f-rules-0-when-all-1-value-error"' in html
    assert starter.draft("storefront") is None  # nothing saved


def test_structural_edits(signed_in: SignIn, starter: RulesetStore) -> None:
    client, _ = signed_in("editor")
    fields = form_fields(client.get("/rulesets/storefront/rules/0").text)
    added = client.post("/rulesets/storefront/rules/0",
                        data={**fields, "action": "add_group:rules[0].when"})
    fields = form_fields(added.text)
    assert fields["rules[0].when.all[3].any[0].field"] == "state.cart_value"
    fields["rules[0].when.all[3]._kind"] = "any"
    fields["rules[0].when.all[3].any[0].value"] = "500"
    removed = client.post("/rulesets/storefront/rules/0",
                          data={**fields, "action": "remove:rules[0].when.all[0]"})
    rule = yaml.safe_load(form_fields(removed.text)["source"])
    assert rule["when"]["all"][0]["field"] == "state.cart_value"
    assert rule["when"]["all"][2] == {"any": [{"field": "state.cart_value", "op": "gt",
                                               "value": 500}]}
    more = client.post("/rulesets/storefront/rules/0",
                       data={**form_fields(removed.text), "action": "add_action"})
    assert len(yaml.safe_load(form_fields(more.text)["source"])["then"]) == 2


def test_source_view_both_ways(signed_in: SignIn, starter: RulesetStore) -> None:
    client, token = signed_in("editor")
    fields = form_fields(client.get("/rulesets/storefront/rules/0").text)
    # form -> source (what editor.js calls while typing)
    fields["rules[0].when.all[1].value"] = "250"
    answer = post(client, "/editor/source", token, **{**fields, "format": "json"})
    assert '"value": 250' in answer.json()["source"]
    # source -> form
    source = yaml.safe_load(fields["source"])
    source["then"][0]["discount"] = {"amount": 20, "code": "TWENTY"}
    applied = client.post("/rulesets/storefront/rules/0", data={
        **fields, "source": yaml.safe_dump(source), "action": "apply_source"})
    new = form_fields(applied.text)
    assert new["rules[0].then[0].discount._type"] == "amount"
    assert new["rules[0].then[0].discount._value"] == "20"
    assert new["rules[0].then[0].discount.code"] == "TWENTY"
    # broken YAML is reported at the source, with its line; the form is kept
    broken = client.post("/rulesets/storefront/rules/0", data={
        **fields, "source": "name: x\nwhen: [\n", "action": "apply_source"})
    assert 'id="f-source-error"' in broken.text and "line" in broken.text
    assert form_fields(broken.text)["rules[0].name"] == "high-value-cart"
    # odd but valid YAML the form cannot show is refused, naming what and where; the
    # source stays as typed and the form as it was
    odd_source = "name: odd\nwhen: [1, 2]\nthen: 5\nactive: x\n"
    odd = client.post("/rulesets/storefront/rules/0", data={
        **fields, "source": odd_source, "action": "apply_source"})
    assert odd.status_code == 200 and "Not applied" in odd.text
    assert "when (line 2): expected a condition object" in html.unescape(odd.text)
    assert form_fields(odd.text)["rules[0].name"] == "high-value-cart"
    assert form_fields(odd.text)["source"] == odd_source


def test_stale_draft_is_refused_naming_who(signed_in: SignIn, starter: RulesetStore) -> None:
    client, _ = signed_in("editor")
    fields = form_fields(client.get("/rulesets/storefront/rules/1").text)
    other, _ = signed_in("admin")
    other_fields = form_fields(other.get("/rulesets/storefront/rules/1").text)
    other_fields["rules[1].priority"] = "60"
    assert other.post("/rulesets/storefront/rules/1",
                      data={**other_fields, "action": "save"}).status_code == 303
    fields["rules[1].priority"] = "70"
    response = client.post("/rulesets/storefront/rules/1", data={**fields, "action": "save"})
    assert response.status_code == 409
    assert "started by admin" in response.text
    draft = starter.draft("storefront")
    assert draft is not None and draft.document["rules"][1]["priority"] == 60


def test_new_ruleset_from_the_form(signed_in: SignIn, starter: RulesetStore) -> None:
    client, _ = signed_in("editor")
    fields = form_fields(client.get("/new-ruleset").text)
    fields |= {"name": "storefront", "rules[0].name": "cart-nudge"}
    taken = client.post("/new-ruleset", data={**fields, "action": "save"})
    assert taken.status_code == 422 and "exists already" in taken.text
    fields["name"] = "autumn"
    created = client.post("/new-ruleset", data={**fields, "action": "save"})
    assert created.status_code == 303
    draft = starter.draft("autumn")
    assert draft is not None
    assert draft.document["rules"][0]["when"] == forms.new_rule()["when"]


def test_parse_types_values_by_field() -> None:
    form = {
        "rules[0].name": "r", "rules[0].when.all[0].field": "event.type",
        "rules[0].when.all[0].op": "in", "rules[0].when.all[0].value": "add_to_cart, search",
        "rules[0].when.all[1].field": "customer.consent", "rules[0].when.all[1].op": "eq",
        "rules[0].when.all[1].value": "true",
        "rules[0].when.all[2].field": "state.cart_value", "rules[0].when.all[2].op": "between",
        "rules[0].when.all[2].value[0]": "10", "rules[0].when.all[2].value[1]": "99.5",
        "rules[0].when.all[10].field": "user.segments", "rules[0].when.all[10].op": "exists",
        "rules[0].then[0]._kind": "add_segment", "rules[0].then[0].add_segment.segment": "vip",
    }
    rule = forms.parse_rule(form, 0)
    assert rule["when"] == {"all": [
        {"field": "event.type", "op": "in", "value": ["add_to_cart", "search"]},
        {"field": "customer.consent", "op": "eq", "value": True},
        {"field": "state.cart_value", "op": "between", "value": [10, 99.5]},
        {"field": "user.segments", "op": "exists"},
    ]}
    assert rule["then"] == [{"add_segment": {"segment": "vip"}}]
    assert rule["enabled"] is False  # an unticked checkbox is not sent


def test_delete_rule_and_settings_go_to_the_draft(signed_in: SignIn,
                                                  starter: RulesetStore) -> None:
    client, token = signed_in("editor")
    page = client.get("/rulesets/storefront").text
    # rules are listed by priority, each linking to its own index
    assert page.index("high-value-cart") < page.index("win-back") < page.index(
        "first-visit-welcome")
    names = [r["name"] for r in starter.get_version("storefront").document["rules"]]
    deleted = post(client, "/rulesets/storefront/rules/1/delete", token, revision="",
                   base_version="1")
    assert deleted.status_code == 303
    assert f"Rule {names[1]} deleted" in client.get("/rulesets/storefront").text
    draft = starter.draft("storefront")
    assert draft is not None
    assert [r["name"] for r in draft.document["rules"]] == names[:1] + names[2:]
    changed = post(client, "/rulesets/storefront/settings", token, revision="1",
                   description="Autumn offers", stacking="on")
    assert changed.status_code == 303
    draft = starter.draft("storefront")
    assert draft is not None and draft.revision == 2
    assert (draft.document["description"], draft.document["stacking"]) == ("Autumn offers",
                                                                            True)
    stale = post(client, "/rulesets/storefront/settings", token, revision="1",
                 description="late")
    assert "Not saved" in client.get(stale.headers["location"]).text


def test_error_paths_in_words() -> None:
    cases = {
        "rules[2].name": "Rule name",
        "rules[2].when.all[1].value": "Condition 2: value",
        "rules[2].when.all[3].any[0].op": "Condition 4.1: operator",
        "rules[2].when.all[1].value[0]": "Condition 2: value",
        "rules[2].when": "Conditions",
        "rules[2].then[0].discount.percent": "Action 1: discount value",
        "rules[2].then[1].recommend.slot": "Action 2: slot",
        "rules[2].then": "Actions",
        "rules[2].active.from": "Active from",
        "rules[0].name": "Rule 1 (another rule)",
        "name": "Ruleset name",
        "": "Ruleset",
        "source": "Source",
    }
    for path, words in cases.items():
        assert forms.describe_path(path, 2) == words, path


def test_editor_speaks_marketer(signed_in: SignIn, starter: RulesetStore) -> None:
    doc = starter.get_version("storefront").document
    doc["rules"][0]["active"] = {"from": "2026-06-01T09:30:00+00:00"}
    doc["rules"][0]["then"].append({"recommend": {"strategy": "covisit", "slot": "cart"}})
    starter.save_draft(doc, "seed")
    client, _ = signed_in("editor")
    page = client.get("/rulesets/storefront/rules/0").text
    assert 'type="datetime-local"' in page and 'value="2026-06-01T09:30"' in page
    # the label, the path only as a tooltip
    assert re.search(r'<option value="state.cart_value" title="state.cart_value"\s*>Cart value<',
                     page)
    assert "Viewed together with this one</option>" in page
    assert 'list="known-slots"' in page and '<option value="product_page">Product page' in page
