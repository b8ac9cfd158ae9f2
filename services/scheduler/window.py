"""The dispatch window's bookkeeping, pure (no I/O; the clock is passed in): which tasks are out,
per tenant and per tasks partition, where each landed in the tasks topic, and which are done
given the processors' committed offsets. The dispatcher (handlers/dispatch.py) owns one."""

from __future__ import annotations

import heapq
from collections import Counter
from typing import TypeVar

K = TypeVar("K")


class TasksOut:
    def __init__(self) -> None:
        self._out: dict[str, tuple[str, float, int]] = {}  # task_id -> (tenant, when dispatched, partition)
        self.by_tenant: Counter[str] = Counter()  # the same, counted
        self.by_partition: Counter[int] = Counter()  # the same, by the tasks partition sent to
        self._landed: dict[int, list[tuple[int, str]]] = {}  # partition -> heap of (offset, task_id)

    def __len__(self) -> int:
        return len(self._out)

    def dispatched(self, task_id: str, tenant: str, now: float, partition: int) -> None:
        """The task was handed to the producer for `partition` of the tasks topic. A task already
        out stays counted where it first went (a repeat dispatch is a rare race that its task
        id makes harmless; its count moves nowhere)."""
        if task_id not in self._out:
            self._out[task_id] = (tenant, now, partition)
            self.by_tenant[tenant] += 1
            self.by_partition[partition] += 1

    def loads(self, partitions: int) -> list[int]:
        """The tasks out on each of the tasks topic's `partitions`, by partition number."""
        return [self.by_partition[p] for p in range(partitions)]

    def landed(self, task_id: str, partition: int, offset: int) -> None:
        """The broker acknowledged the task at (partition, offset)."""
        if task_id in self._out:
            heapq.heappush(self._landed.setdefault(partition, []), (offset, task_id))

    def processed(self, committed: dict[int, int]) -> list[str]:
        """The processors' committed offset per partition: the tasks that landed below it are
        done; they are no longer out, and are returned."""
        done: list[str] = []
        for partition, offset in committed.items():
            heap = self._landed.get(partition)
            while heap and heap[0][0] < offset:
                done.append(heapq.heappop(heap)[1])
        return self.free(done)

    def free(self, task_ids: list[str]) -> list[str]:
        """These tasks are no longer out (those that were are returned)."""
        freed = []
        for task_id in task_ids:
            found = self._out.pop(task_id, None)
            if found is not None:
                tenant, _, partition = found
                _uncount(self.by_tenant, tenant)
                _uncount(self.by_partition, partition)
                freed.append(task_id)
        return freed

    def expire(self, dispatched_before: float) -> list[str]:
        """Free the tasks dispatched before then and not done yet (their offset never passed:
        the processors' group was reset, say), and forget where they landed."""
        stale = self.free([task_id for task_id, (_, at, _) in self._out.items() if at < dispatched_before])
        if stale:
            for partition, heap in self._landed.items():
                self._landed[partition] = [entry for entry in heap if entry[1] in self._out]
                heapq.heapify(self._landed[partition])
        return stale


def _uncount(counter: Counter[K], key: K) -> None:
    """One task fewer under `key`; a key with none left goes (only keys with tasks out are counted)."""
    counter[key] -= 1
    if not counter[key]:
        del counter[key]
