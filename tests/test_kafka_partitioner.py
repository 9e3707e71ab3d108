"""The producer's partitioner: kafka-python's default choice, each key's hash remembered."""

from __future__ import annotations

import random
from typing import Any

from kafka.partitioner.default import DefaultPartitioner

from decisions.runtime.kafka import KeyHashCache


class Cluster:
    def __init__(self, partitions: int) -> None:
        self.parts = set(range(partitions))

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.parts if topic == "t" else None

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.parts


def test_same_partition_as_the_default_for_every_key() -> None:
    rnd = random.Random(3)
    cached, default = KeyHashCache(), DefaultPartitioner()
    for partitions in (1, 3, 6, 7):
        cluster: Any = Cluster(partitions)
        keys = [f"user-{rnd.randrange(10_000)}".encode() for _ in range(2000)]
        keys += ["ü-é-✓".encode(), b"", b"x" * 301]
        for key in keys + keys:  # the second time from the cache
            assert cached.partition("t", key, key, None, None, cluster) \
                == default.partition("t", key, key, None, None, cluster)
    assert cached.partition("t", None, None, None, None, Cluster(3)) in {0, 1, 2}
