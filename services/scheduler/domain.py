"""The schedule in memory: which pending jobs fall due when. Pure; the clock is a parameter.

The durable copy is the `scheduler_jobs` table; this index holds only (due_at, job_id,
partition) so a million pending jobs fit in modest memory, and it is rebuilt from the table
when partitions are assigned.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from shared.events import ImageTask, JobReleased, JobSubmitted, task_id_for


@dataclass
class Schedule:
    _heap: list[tuple[datetime, UUID, int]] = field(default_factory=list)
    _pending: dict[UUID, int] = field(default_factory=dict)  # job_id -> partition

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, job_id: object) -> bool:
        """The job is pending here (not yet popped, not of a dropped partition)."""
        return job_id in self._pending

    def add(self, job_id: UUID, due_at: datetime, partition: int) -> bool:
        """Add a pending job; False if it is already scheduled (redelivery)."""
        if job_id in self._pending:
            return False
        self._pending[job_id] = partition
        heapq.heappush(self._heap, (due_at, job_id, partition))
        return True

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget jobs of partitions this instance no longer owns (their new owner loads them)."""
        self._pending = {j: p for j, p in self._pending.items() if p not in partitions}
        self._heap = [e for e in self._heap if e[2] not in partitions]
        heapq.heapify(self._heap)

    def next_due_at(self) -> datetime | None:
        self._discard_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: datetime, limit: int) -> list[UUID]:
        """Jobs whose time has come (due_at <= now), earliest first, at most `limit`."""
        due: list[UUID] = []
        while len(due) < limit:
            self._discard_stale()
            if not self._heap or self._heap[0][0] > now:
                break
            _, job_id, _ = heapq.heappop(self._heap)
            del self._pending[job_id]
            due.append(job_id)
        return due

    def due_before(self, until: datetime, limit: int) -> list[tuple[UUID, int]]:
        """(job_id, partition) of up to `limit` pending jobs due at or before `until`, without
        removing them. Walks only the top of the heap: a node due later than `until` has no
        descendant due earlier, so the cost is in the jobs found, not in all pending jobs."""
        found: list[tuple[UUID, int]] = []
        stack = [0] if self._heap else []
        while stack and len(found) < limit:
            i = stack.pop()
            due_at, job_id, partition = self._heap[i]
            if due_at > until:
                continue
            if self._pending.get(job_id) == partition:
                found.append((job_id, partition))
            stack.extend(c for c in (2 * i + 1, 2 * i + 2) if c < len(self._heap))
        return found

    def _discard_stale(self) -> None:
        while self._heap and self._pending.get(self._heap[0][1]) != self._heap[0][2]:
            heapq.heappop(self._heap)


def tasks_for(job: JobSubmitted) -> list[ImageTask]:
    """One task per image, keyed `job_id:visit_index:image_index` (the idempotency key)."""
    # model_construct: every field comes from a validated JobSubmitted, so validating each of
    # thousands of tasks again would only cost time (a 10,000-image job is released at once)
    return [
        ImageTask.model_construct(job_id=job.job_id, task_id=task_id_for(job.job_id, v, i), visit_index=v,
                                  image_index=i, store_id=visit.store_id, image_url=url,
                                  scheduled_time=job.scheduled_time)
        for v, visit in enumerate(job.visits)
        for i, url in enumerate(visit.image_urls)
    ]


def released(job: JobSubmitted) -> JobReleased:
    return JobReleased(job_id=job.job_id, scheduled_time=job.scheduled_time,
                       total_images=job.total_images)
