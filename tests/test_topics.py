"""The topics the product creates when missing: partitions and replication factor from
the settings; a replication factor the brokers refuse stops the start with one line."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.errors import InvalidReplicationFactorError

from decisions.core.errors import ConfigError
from decisions.core.settings import Settings
from decisions.runtime.kafka import ensure_topics
from tests.test_worker_processes import topic_partitions


def test_missing_topics_are_created_with_the_configured_replication_factor(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, int, int]] = []
    create = KafkaAdminClient.create_topics

    def recorded(admin: KafkaAdminClient, new_topics: list[Any], **kw: Any) -> Any:
        asked.extend((t.name, t.num_partitions, t.replication_factor) for t in new_topics)
        return create(admin, new_topics, **kw)

    monkeypatch.setattr(KafkaAdminClient, "create_topics", recorded)
    settings = replace(settings, topic_partitions=5, topic_replication_factor=3)
    ensure_topics(settings, [settings.events_topic])
    # the test broker (Tansu) keeps its data in storage and takes any factor
    assert asked == [(settings.events_topic, 5, 3)]
    assert topic_partitions(settings) == 5
    ensure_topics(settings, [settings.events_topic])  # there already: not asked again
    assert len(asked) == 1
    assert Settings.from_env({}).topic_replication_factor == 1
    assert Settings.from_env(
        {"DECISIONS_TOPIC_REPLICATION_FACTOR": "3"}).topic_replication_factor == 3


def test_a_refused_replication_factor_stops_with_one_line(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(admin: KafkaAdminClient, new_topics: list[Any], **kw: Any) -> Any:
        # what Apache Kafka with one broker answers
        raise InvalidReplicationFactorError("Replication factor: 3 larger than available "
                                            "brokers: 1.")

    monkeypatch.setattr(KafkaAdminClient, "create_topics", refused)
    settings = replace(settings, topic_replication_factor=3)
    with pytest.raises(ConfigError) as caught:
        ensure_topics(settings, [settings.events_topic])
    message = str(caught.value)
    assert "\n" not in message
    assert f"Kafka refused to create {settings.events_topic} with " \
           "DECISIONS_TOPIC_REPLICATION_FACTOR=3" in message
    assert "larger than available brokers: 1" in message
