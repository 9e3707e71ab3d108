"""The versioned ruleset store against PostgreSQL: publish, rollback, diff, concurrent edits,
four-eyes approval, the audit log, and the notification workers listen for."""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from decisions.core.errors import Conflict, DecisionsError, Forbidden, NotFound, ValidationError
from rulesets.models import AuditEntry, Ruleset
from rulesets.notify import RulesetListener
from rulesets.store import RulesetStore


def document(threshold: float = 200, *, four_eyes: bool = False,
             extra_rule: bool = False) -> dict[str, Any]:
    rules: list[dict[str, Any]] = [{
        "name": "big-cart", "priority": 10,
        "when": {"all": [{"field": "event.type", "op": "eq", "value": "add_to_cart"},
                         {"field": "state.cart_value", "op": "gt", "value": threshold}]},
        "then": [{"discount": {"percent": 10}}],
    }]
    if extra_rule:
        rules.append({"name": "welcome", "when": {"field": "state.order_count", "op": "eq",
                                                  "value": 0},
                      "then": [{"discount": {"percent": 5}}]})
    return {"name": "shop", "four_eyes": four_eyes, "rules": rules}


@pytest.fixture
def store(clean_db: Engine) -> RulesetStore:
    return RulesetStore(clean_db)


def audit_actions(store: RulesetStore) -> list[tuple[str, str, int | None]]:
    return [(e.actor, e.action, e.version) for e in reversed(store.audit("shop"))]


def test_publish_creates_immutable_versions_with_author_and_comment(store: RulesetStore) -> None:
    assert store.active_marker() == ""
    store.save_draft(document(200), "alice")
    assert store.publish("shop", "alice", "first cut") == 1
    marker = store.active_marker()
    store.save_draft(document(250, extra_rule=True), "bob")
    assert store.get_version("shop").version == 1  # a draft changes nothing live
    assert store.publish("shop", "bob", "raise threshold") == 2
    assert store.active_marker() != marker
    assert store.draft("shop") is None
    versions = store.versions("shop")
    assert [(v.version, v.author, v.comment) for v in versions] == [
        (2, "bob", "raise threshold"), (1, "alice", "first cut")]
    assert all(v.created_at is not None for v in versions)
    assert store.get_version("shop", 1).document["rules"][0]["when"]["all"][1]["value"] == 200
    assert [a.version for a in store.active_documents()] == [2]


def test_rollback_publishes_the_old_document_as_a_new_version(store: RulesetStore) -> None:
    store.save_draft(document(200), "alice")
    store.publish("shop", "alice", "v1")
    store.save_draft(document(250), "alice")
    store.publish("shop", "alice", "v2")
    assert store.rollback("shop", 1, "carol") == 3
    assert store.get_version("shop").version == 3
    assert store.get_version("shop").document == store.get_version("shop", 1).document
    v3 = store.versions("shop")[0]
    assert (v3.author, v3.comment) == ("carol", "rollback to version 1")
    entry = store.audit("shop")[0]
    assert (entry.actor, entry.action, entry.version) == ("carol", "rollback", 3)
    assert entry.before == store.get_version("shop", 2).document
    assert entry.after == store.get_version("shop", 1).document
    with pytest.raises(NotFound, match='ruleset "shop" has no version 9'):
        store.rollback("shop", 9, "carol")


def test_diff_between_versions_and_the_draft(store: RulesetStore) -> None:
    store.save_draft(document(200), "alice")
    store.publish("shop", "alice", "v1")
    store.save_draft(document(250, extra_rule=True), "alice")
    store.publish("shop", "alice", "v2")
    diff = store.diff("shop", 1, 2)
    assert diff["settings"] == {}
    assert diff["added"] == ["welcome"] and diff["removed"] == []
    assert diff["changed"] == [{
        "rule": "big-cart",
        "fields": {"when": {"before": document(200)["rules"][0]["when"],
                            "after": document(250)["rules"][0]["when"]}},
        "changes": [{"path": "when.all[1].value", "before": 200, "after": 250}],
    }]
    back = store.diff("shop", 2, 1)
    assert back["removed"] == ["welcome"] and back["added"] == []
    draft = document(250, four_eyes=True)
    draft["rules"][0]["priority"] = 99
    store.save_draft(draft, "bob")
    to_draft = store.diff("shop", "2", "draft")
    assert to_draft["settings"] == {"four_eyes": {"before": False, "after": True}}
    assert to_draft["removed"] == ["welcome"]
    assert to_draft["changed"][0]["changes"] == [
        {"path": "priority", "before": 10, "after": 99}]
    assert store.diff("shop", 1, 1) == {"settings": {}, "added": [], "removed": [],
                                        "changed": []}
    with pytest.raises(ValidationError, match='"latest" is not a version'):
        store.diff("shop", "latest", 1)


def test_saving_over_a_newer_draft_is_refused_naming_who_and_when(store: RulesetStore) -> None:
    first = store.save_draft(document(200), "alice")
    # bob and carol both open revision 1; bob saves first
    store.save_draft(document(210), "bob", expected_revision=first.revision)
    with pytest.raises(Conflict) as caught:
        store.save_draft(document(220), "carol", expected_revision=first.revision)
    message = caught.value.message
    assert "changed by bob at" in message and "revision 2, you edited revision 1" in message
    assert store.draft("shop") is not None
    assert store.draft("shop").document["rules"][0]["when"]["all"][1]["value"] == 210  # type: ignore[union-attr]


def test_saving_a_draft_that_was_published_meanwhile_is_refused(store: RulesetStore) -> None:
    opened = store.save_draft(document(200), "alice")
    store.publish("shop", "bob", "ship it")
    with pytest.raises(Conflict, match="version 1 was published by bob at"):
        store.save_draft(document(300), "alice", expected_revision=opened.revision)
    # editing from a published version: someone publishing a newer one first is refused
    store.save_draft(document(300), "dave", base_version=1)
    store.publish("shop", "dave", "v2")
    with pytest.raises(Conflict, match="version 2 was published by dave"):
        store.save_draft(document(400), "erin", base_version=1)
    store.save_draft(document(400), "erin", base_version=2)


def test_four_eyes_publishing_needs_a_second_person(store: RulesetStore) -> None:
    store.save_draft(document(four_eyes=True), "alice")
    with pytest.raises(Forbidden, match="needs a second person to approve"):
        store.publish("shop", "alice", "solo")
    with pytest.raises(Forbidden, match="someone other than the draft's last editor"):
        store.publish("shop", "alice", "self-approved", approved_by="alice")
    assert store.publish("shop", "bob", "approved", approved_by="bob") == 1
    assert store.versions("shop")[0].approved_by == "bob"
    with pytest.raises(ValidationError, match="requires four-eyes approval"):
        store.import_document(document(300, four_eyes=True), "alice")
    assert store.draft("shop") is not None  # kept as a draft for the approver
    # a draft switching four eyes off still needs approval to go live
    store.save_draft(document(300), "alice")
    with pytest.raises(Forbidden, match="needs a second person to approve"):
        store.publish("shop", "alice", "sneaky")
    assert store.publish("shop", "carol", "approved", approved_by="carol") == 2
    store.save_draft(document(400), "alice")
    assert store.publish("shop", "alice", "four eyes was switched off, approved") == 3


def test_every_change_is_audited_with_before_and_after(store: RulesetStore) -> None:
    store.save_draft(document(200), "alice")
    store.publish("shop", "alice", "v1")
    store.save_draft(document(250), "bob")
    store.publish("shop", "bob", "v2")
    store.rollback("shop", 1, "carol", "too aggressive")
    assert audit_actions(store) == [
        ("alice", "create", None), ("alice", "save_draft", None), ("alice", "publish", 1),
        ("bob", "save_draft", None), ("bob", "publish", 2), ("carol", "rollback", 3),
    ]
    entries = list(reversed(store.audit("shop")))
    assert entries[1].before is None and entries[1].after == store.get_version("shop", 1).document
    assert entries[3].before == store.get_version("shop", 1).document
    assert entries[4].before == store.get_version("shop", 1).document
    assert entries[4].after == store.get_version("shop", 2).document
    assert entries[5].comment == "too aggressive"
    assert all(e.at is not None for e in entries)


def test_a_bad_document_is_never_half_applied(store: RulesetStore, clean_db: Engine) -> None:
    bad = copy.deepcopy(document())
    bad["rules"].append({"name": "broken", "when": {"field": "state.nope", "op": "gt",
                                                    "value": 1},
                         "then": [{"discount": {"percent": 5}}]})
    with pytest.raises(ValidationError) as caught:
        store.save_draft(bad, "alice")
    assert [d.field for d in caught.value.details] == ["rules[1].when.field"]
    with Session(clean_db) as s:
        assert s.scalar(select(func.count()).select_from(Ruleset)) == 0
        assert s.scalar(select(func.count()).select_from(AuditEntry)) == 0
    store.save_draft(document(), "alice")
    store.publish("shop", "alice", "v1")
    with pytest.raises(ValidationError):
        store.save_draft(bad, "alice")
    assert store.draft("shop") is None and store.get_version("shop").version == 1


def test_concurrent_publishes_make_one_version(store: RulesetStore) -> None:
    store.save_draft(document(), "alice")
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def publish(who: str) -> None:
        barrier.wait()
        try:
            results.append(store.publish("shop", who, "race"))
        except DecisionsError as exc:
            results.append(type(exc).__name__)

    threads = [threading.Thread(target=publish, args=(w,)) for w in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(map(str, results)) == ["1", "NotFound"]
    assert [v.version for v in store.versions("shop")] == [1]


def test_publish_notifies_listeners(store: RulesetStore, database_url: str) -> None:
    with RulesetListener(database_url) as listener:
        assert listener.changed() is True  # a fresh LISTEN: anything may have happened
        assert listener.changed() is False
        store.save_draft(document(), "alice")
        assert listener.changed() is False  # drafts are not live
        store.publish("shop", "alice", "v1")
        store.rollback("shop", 1, "alice")
        deadline = time.monotonic() + 5
        got: list[str] = []
        while time.monotonic() < deadline and len(got) < 2:
            if listener.changed():
                got += listener.received
            time.sleep(0.01)
        assert got == ["shop:1", "shop:2"]


def test_listener_survives_an_unreachable_database() -> None:
    listener = RulesetListener("postgresql://nobody@127.0.0.1:1/none", retry_seconds=60)
    assert listener.changed() is False  # cannot connect: polling stays the fallback
    assert listener.changed() is False  # and it does not retry before retry_seconds
    listener.close()


def test_versions_credit_the_writer_and_audit_rows_name_the_rules(store: RulesetStore) -> None:
    store.save_draft(document(200), "alice")
    store.publish("shop", "alice", "first")
    store.save_draft(document(250, extra_rule=True), "alice")
    store.publish("shop", "bob", "reviewed")
    first, second = sorted(store.versions("shop"), key=lambda v: v.version)
    assert (first.author, first.approved_by) == ("alice", None)
    assert (second.author, second.approved_by) == ("alice", "bob")
    saves = [e.comment for e in reversed(store.audit("shop")) if e.action == "save_draft"]
    assert saves == ["new ruleset: rules big-cart",
                     "added rule welcome; changed rule big-cart"]
