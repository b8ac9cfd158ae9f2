"""The schedule in memory: which pending jobs fall due when. Pure; the clock is a parameter.

The durable copy is the `scheduler_jobs` table; this index holds only (due_at, job_id,
partition) so a million pending jobs fit in modest memory, and it is rebuilt from the table
when partitions are assigned. `decide` is how a cancel or reschedule is answered.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from uuid import UUID

from shared.events import (
    ImageFailed,
    ImageTask,
    JobCancelled,
    JobCancelRequested,
    JobCommand,
    JobCommandRefused,
    JobReleased,
    JobRescheduled,
    JobSubmitted,
    envelope,
    task_id_for,
    utcnow,
)

Entry = tuple[datetime, UUID, int]  # (due_at, job_id, partition)


@dataclass
class Schedule:
    _heap: list[Entry] = field(default_factory=list)
    # job_id -> its live heap entry; an entry that is not the live one (the job was popped,
    # removed or moved) is stale and skipped when it reaches the top
    _pending: dict[UUID, Entry] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, job_id: object) -> bool:
        """The job is pending here (not yet popped, not of a dropped partition)."""
        return job_id in self._pending

    def add(self, job_id: UUID, due_at: datetime, partition: int) -> bool:
        """Add a pending job; False if it is already scheduled (redelivery)."""
        if job_id in self._pending:
            return False
        self.move(job_id, due_at, partition)
        return True

    def move(self, job_id: UUID, due_at: datetime, partition: int) -> None:
        """The job is (now) due at `due_at`: a reschedule, or a job put back."""
        entry = (due_at, job_id, partition)
        self._pending[job_id] = entry
        heapq.heappush(self._heap, entry)

    def remove(self, job_id: UUID) -> bool:
        """Forget a pending job (cancelled); False if it was not pending here."""
        return self._pending.pop(job_id, None) is not None

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget jobs of partitions this instance no longer owns (their new owner loads them)."""
        self._pending = {j: e for j, e in self._pending.items() if e[2] not in partitions}
        self._heap = [e for e in self._heap if self._pending.get(e[1]) is e]
        heapq.heapify(self._heap)

    def next_due_at(self) -> datetime | None:
        self._discard_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: datetime, limit: int) -> list[UUID]:
        """Jobs whose time has come (due_at <= now), earliest first, at most `limit`."""
        return [job_id for job_id, _ in self.pop_due_entries(now, limit)]

    def pop_due_entries(self, now: datetime, limit: int) -> list[tuple[UUID, int]]:
        """(job_id, partition) of the jobs whose time has come, earliest first, at most `limit`."""
        due: list[tuple[UUID, int]] = []
        while len(due) < limit:
            self._discard_stale()
            if not self._heap or self._heap[0][0] > now:
                break
            _, job_id, partition = heapq.heappop(self._heap)
            del self._pending[job_id]
            due.append((job_id, partition))
        return due

    def due_before(self, until: datetime, limit: int) -> list[tuple[UUID, int]]:
        """(job_id, partition) of up to `limit` pending jobs due at or before `until`, without
        removing them. Walks only the top of the heap: a node due later than `until` has no
        descendant due earlier, so the cost is in the jobs found, not in all pending jobs."""
        found: list[tuple[UUID, int]] = []
        stack = [0] if self._heap else []
        while stack and len(found) < limit:
            i = stack.pop()
            entry = self._heap[i]
            due_at, job_id, partition = entry
            if due_at > until:
                continue
            if self._pending.get(job_id) is entry:
                found.append((job_id, partition))
            stack.extend(c for c in (2 * i + 1, 2 * i + 2) if c < len(self._heap))
        return found

    def _discard_stale(self) -> None:
        while self._heap and self._pending.get(self._heap[0][1]) is not self._heap[0]:
            heapq.heappop(self._heap)


class RecentlyReleased:
    """Jobs this instance released lately. A re-published submit (an Idempotency-Key retry, a
    redelivery) stored by a transaction that read the job's row as pending just before its
    release was marked must not be held again (that released the job twice); once the mark has
    been committed for `grace_s`, the row's own state catches every later one, so the id is
    forgotten. Bounded by time, not only by count: kept until the cap, 72,000 ids were 9 MiB of
    a 30-minute soak's scheduler (issue 22), and a mark takes seconds."""

    def __init__(self, grace_s: float, most: int) -> None:
        self.grace_s, self.most = grace_s, most
        self._marked_at: dict[UUID, float | None] = {}  # None: its release is not marked yet
        self._order: deque[UUID] = deque()

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._marked_at

    def __len__(self) -> int:
        return len(self._marked_at)

    def released(self, job_id: UUID) -> None:
        if job_id not in self._marked_at:
            self._order.append(job_id)
        self._marked_at[job_id] = None

    def marked(self, job_ids: Iterable[UUID], now: float) -> None:
        """Their release was marked in the table (or given up on): forgotten `grace_s` later."""
        for job_id in job_ids:
            if job_id in self._marked_at:
                self._marked_at[job_id] = now

    def forget_old(self, now: float) -> None:
        """Drop ids marked more than `grace_s` ago, oldest first, and any beyond `most`. An id
        whose release is not marked yet holds back the ones behind it (releases are marked in
        about the order they were taken)."""
        while self._order:
            first = self._order[0]
            at = self._marked_at[first]
            if len(self._order) <= self.most and (at is None or now - at < self.grace_s):
                return
            self._order.popleft()
            del self._marked_at[first]


@dataclass(frozen=True)
class Stored:
    """What storing a batch of submissions found: jobs not to hold in the timer."""

    withdrawn: set[UUID]  # withdrawn by ingest before they arrived: not stored
    done: set[UUID]  # stored before and no longer pending (released or cancelled)

    def to_hold(self, submitted: Sequence[tuple[int, JobSubmitted]]) -> list[tuple[int, JobSubmitted]]:
        return [(p, e) for p, e in submitted if e.job_id not in self.withdrawn and e.job_id not in self.done]


@dataclass(frozen=True)
class DispatchRow:
    """A released job whose tasks are not all dispatched yet, as its row stores it."""

    job_id: UUID
    partition: int
    tenant: str | None
    priority: int
    total: int
    dispatched: int


def image_positions(job: JobSubmitted) -> list[tuple[int, int]]:
    """(visit_index, image_index) of each of the job's images, in `tasks_for` order: the task
    of ordinal n is the image at position n."""
    return [(v, i) for v, visit in enumerate(job.visits) for i in range(len(visit.image_urls))]


def task_at(job: JobSubmitted, position: tuple[int, int], now: datetime) -> ImageTask:
    """The task of the image at `position` (the same as `tasks_for` makes for it)."""
    v, i = position
    visit = job.visits[v]
    return ImageTask.model_construct(**envelope(ImageTask, now), job_id=job.job_id,
                                     task_id=task_id_for(job.job_id, v, i), visit_index=v, image_index=i,
                                     store_id=visit.store_id, image_url=visit.image_urls[i],
                                     scheduled_time=job.scheduled_time, tenant=job.owner, priority=job.priority)


def tasks_for(job: JobSubmitted) -> list[ImageTask]:
    """One task per image, keyed `job_id:visit_index:image_index` (the idempotency key)."""
    # model_construct: every field comes from a validated JobSubmitted, so validating each of
    # thousands of tasks again would only cost time (a 10,000-image job is released at once)
    now = utcnow()
    return [
        ImageTask.model_construct(**envelope(ImageTask, now), job_id=job.job_id, task_id=task_id_for(job.job_id, v, i),
                                  visit_index=v, image_index=i, store_id=visit.store_id, image_url=url,
                                  scheduled_time=job.scheduled_time, tenant=job.owner, priority=job.priority)
        for v, visit in enumerate(job.visits)
        for i, url in enumerate(visit.image_urls)
    ]


def unschedulable(job: JobSubmitted, reason: str) -> list[ImageFailed]:
    """Each image of a job the schedule could not hold, failed with the reason: the job ends
    `failed` (one result per image) instead of waiting for ever."""
    why = f"job could not be scheduled: {reason}"[:1000]
    return [ImageFailed(job_id=task.job_id, task_id=task.task_id, visit_index=task.visit_index,
                        image_index=task.image_index, store_id=task.store_id, image_url=task.image_url,
                        reason=why) for task in tasks_for(job)]


def task_partition(job_id: UUID, ordinal: int, partitions: int) -> int:
    """The tasks-topic partition a job's `ordinal`-th image (in `tasks_for` order) prefers: it
    goes there when no partition has fewer tasks out (`least_busy_partition`). A job's images
    prefer consecutive partitions from a start fixed by its id, so one job's images are
    processed side by side, and a release is spread evenly (hashing each task_id left the
    busiest of four processors ~3% more images than the mean, which it then finished last)."""
    return (int.from_bytes(job_id.bytes[:4], "big") + ordinal) % partitions


def least_busy_partition(preferred: int, out: list[int]) -> int:
    """Where a task goes, given the tasks out (dispatched, not done) on each partition of the
    tasks topic (`out`: one count per partition, at least one; `preferred` one of them): its
    `preferred` partition (`task_partition`) if none has fewer out, else the first of the least
    busy after it (cyclically). The caller counts the task in `out`.

    Equal shares are not equal speeds: a processor sharing its core with the broker, or on a
    slower machine, drains its partitions more slowly. With every task placed by job, its
    partitions kept as many tasks as the others', so the window filled with its backlog while
    the faster processors ran dry, and it finished a burst alone (on the two-core `make run`
    stack, 0-700 ms after the other processor, 280 on average). Sending each task where the
    fewest wait keeps every processor's queue as long as the others', and a faster one takes
    more. "Out" counts a task until the processors' committed offset passes it, so a partition
    whose oldest task is slow (a download taking its full timeout) keeps its finished tasks
    counted and gets no new ones meanwhile; placed by job, it took its share and held the
    window's places."""
    low = min(out)
    if out[preferred] == low:
        return preferred
    count = len(out)
    for step in range(1, count):
        partition = (preferred + step) % count
        if out[partition] == low:
            return partition
    raise AssertionError("unreachable: some partition has the fewest")


def released(job: JobSubmitted) -> JobReleased:
    return JobReleased(job_id=job.job_id, scheduled_time=job.scheduled_time,
                       total_images=job.total_images)


# -- cancel and reschedule: decided by the release owner ----------------------------------
# A job's state for a command: its row's state, except that a pending job whose release has
# begun (popped from the timer, or possibly released by a process that died) is `releasing`;
# None: no such job here.
# `withdrawn`: the command itself was withdrawn by the status API (it answered 503: nothing
# changes), whatever the job's state.
State = Literal["pending", "releasing", "dispatching", "released", "cancelled", "withdrawn"] | None


@dataclass(frozen=True)
class Decision:
    command_id: UUID
    job_id: UUID
    command: Literal["cancel", "reschedule"]
    accepted: bool
    state: str  # the job's state after the decision: pending, cancelled, released or unknown
    scheduled_time: datetime | None = None  # an accepted reschedule's new time


Decided = list[tuple[Decision, bool]]  # each command's decision, True when decided now


@dataclass(frozen=True)
class Found:
    """What the durable schedule holds for a batch of commands, read (the jobs' rows locked) in
    the transaction that stores their decisions."""

    withdrawn: set[UUID]  # command ids the status API withdrew first
    known: dict[UUID, Decision]  # command id -> its decision, stored before (a redelivery)
    states: dict[UUID, State]  # job id -> its row's state


def _shown(state: State) -> str:
    """The state a refusal names: a job whose release has begun is already released."""
    if state is None:
        return "unknown"
    return "released" if state in ("releasing", "dispatching") else state


def decide(command: JobCommand, state: State) -> Decision:
    """Accept a command only while the job is pending (not yet claimed by its release); a
    repeated cancel of a cancelled job is accepted again, so a retried request gets the same
    answer. Everything else is refused, naming the state the job is already in."""
    kind: Literal["cancel", "reschedule"] = "cancel" if isinstance(command, JobCancelRequested) else "reschedule"
    if state == "withdrawn":
        return Decision(command.command_id, command.job_id, kind, False, "withdrawn")
    if isinstance(command, JobCancelRequested):
        accepted = state in ("pending", "cancelled")
        return Decision(command.command_id, command.job_id, kind, accepted, "cancelled" if accepted else _shown(state))
    if state == "pending":
        return Decision(command.command_id, command.job_id, kind, True, "pending", command.scheduled_time)
    return Decision(command.command_id, command.job_id, kind, False, _shown(state))


def decide_all(commands: Sequence[JobCommand], found: Found, begun: Callable[[UUID], bool]) -> Decided:
    """Each command's decision, in order, with True when it is decided now (False: decided
    before, its effect already stored). `begun(job_id)`: the release of that pending job has
    begun (for a command it is already released). A later command of the batch sees an
    earlier one's effect; a command repeated in the batch gets the first one's answer."""
    states: dict[UUID, State] = {job: "releasing" if state == "pending" and begun(job) else state
                                 for job, state in found.states.items()}
    known = dict(found.known)
    out: Decided = []
    for command in commands:
        if command.command_id in known:
            out.append((known[command.command_id], False))
            continue
        decision = decide(command, "withdrawn" if command.command_id in found.withdrawn
                          else states.get(command.job_id))
        if decision.accepted:
            states[command.job_id] = "cancelled" if decision.command == "cancel" else "pending"
        known[command.command_id] = decision
        out.append((decision, True))
    return out


def decision_event(decision: Decision) -> JobCancelled | JobRescheduled | JobCommandRefused:
    """What the release owner publishes on the jobs topic (keyed by job_id, after the job's
    own events) so the status view, and the client waiting on it, learn the answer."""
    if not decision.accepted:
        return JobCommandRefused(job_id=decision.job_id, command_id=decision.command_id,
                                 command=decision.command, state=decision.state)
    if decision.command == "cancel":
        return JobCancelled(job_id=decision.job_id, command_id=decision.command_id)
    assert decision.scheduled_time is not None
    return JobRescheduled(job_id=decision.job_id, command_id=decision.command_id,
                          scheduled_time=decision.scheduled_time)
