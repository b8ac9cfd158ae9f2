"""Whether the status fold holds every partition (services/status/adapters/projector.py): what
lets status reads come from memory and the progress streams stop polling for other instances."""

from __future__ import annotations

from aiokafka import TopicPartition

from services.status.adapters.projector import holds_every_partition


class Metadata:
    def __init__(self, partitions: dict[str, set[int]]) -> None:
        self.partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions.get(topic)


def assigned(*pairs: tuple[str, int]) -> list[TopicPartition]:
    return [TopicPartition(topic, partition) for topic, partition in pairs]


def test_every_partition_of_every_topic_is_coverage() -> None:
    cluster = Metadata({"jobs": {0, 1}, "results": {0}})
    assert holds_every_partition(cluster, assigned(("jobs", 0), ("jobs", 1), ("results", 0)), ["jobs", "results"])


def test_a_partition_missing_or_a_topic_not_known_yet_is_not() -> None:
    cluster = Metadata({"jobs": {0, 1}, "results": {0}})
    assert not holds_every_partition(cluster, assigned(("jobs", 0), ("results", 0)), ["jobs", "results"])
    assert not holds_every_partition(cluster, assigned(("jobs", 0), ("jobs", 1)), ["jobs", "results"])
    assert not holds_every_partition(Metadata({"jobs": {0}}), assigned(("jobs", 0)), ["jobs", "results"])
    assert not holds_every_partition(cluster, [], ["jobs", "results"])
