"""Which offsets may be committed when tasks finish out of order. Pure.

Records of a partition are processed concurrently; the committable offset is the lowest
offset still in flight (or one past the highest finished), so a crash never skips work.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PartitionOffsets:
    in_flight: set[int] = field(default_factory=set)
    highest_done: int = -1


class OffsetTracker:
    def __init__(self) -> None:
        self._parts: dict[object, PartitionOffsets] = {}

    def started(self, partition: object, offset: int) -> None:
        self._parts.setdefault(partition, PartitionOffsets()).in_flight.add(offset)

    def finished(self, partition: object, offset: int) -> None:
        part = self._parts.get(partition)
        if part is None or offset not in part.in_flight:
            return  # the partition was given up meanwhile: its new owner redoes this record
        part.in_flight.discard(offset)
        part.highest_done = max(part.highest_done, offset)

    def committable(self) -> dict[object, int]:
        """partition -> next offset to consume (Kafka's commit convention)."""
        out: dict[object, int] = {}
        for partition, part in self._parts.items():
            if part.in_flight:
                out[partition] = min(part.in_flight)
            elif part.highest_done >= 0:
                out[partition] = part.highest_done + 1
        return out

    def in_flight(self, partitions: set[object] | None = None) -> int:
        return sum(len(p.in_flight) for k, p in self._parts.items() if partitions is None or k in partitions)

    def forget(self, partitions: set[object]) -> None:
        for partition in partitions:
            self._parts.pop(partition, None)
