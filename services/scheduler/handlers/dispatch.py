"""Fair dispatch: released jobs' tasks go to the tasks topic only as fast as the processors take
them, chosen fairly (shared/fairness.py: tenants by weight, a tenant's jobs by priority, then in
turn), so the tasks topic stays shallow and a small job never waits for someone else's backlog.

At most `DISPATCH_WINDOW` tasks are out (handed to Kafka, not yet done); a task is done once the
processors' committed offset on its partition is past the offset its acknowledgement gave it
(adapters/completions.py polls those offsets while tasks are out), which frees its place. A
round takes as many tasks as there is room for, up to an eighth of the window (`ROUND_PARTS`),
hands them to the idempotent producer (`tasks_for` order within a job, each to the partition of
the tasks topic with the fewest tasks out, the one its job prefers for it when that is among
them: domain.least_busy_partition) together with each touched job's running total
(`TasksDispatched`: one record per round and partition of the jobs topic), and a
confirmation task waits for the acknowledgements, notes each task's offset and stores each
job's cursor. A crash in between dispatches again from the
stored cursor: the same task ids, which the processors and the status fold ignore as repeats.
Nothing is lost or doubled in effect.

The window is a throughput bound, not a correctness one: a task whose offset is never passed
(the processors' group was reset, say) frees its place after LEASE_S.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from prometheus_client import Counter as Total
from prometheus_client import Gauge

from services.scheduler.domain import DispatchRow, image_positions, least_busy_partition, task_at, task_partition
from services.scheduler.ports import Acks, DispatchStore, TaskRecord, TaskSender
from services.scheduler.settings import SchedulerSettings
from services.scheduler.window import TasksOut
from shared.events import MAX_JOBS_PER_DISPATCH_EVENT, JobSubmitted, TasksDispatched, encode_event, envelope, utcnow
from shared.fairness import CursorLane, FairQueue, parse_weights
from shared.group_commit import GroupCommit
from shared.metrics import STAGE, latency_histogram, tenant_label
from shared.retry import retry_record_work
from shared.runtime import exit_if_it_dies
from shared.waits import woken_within

log = logging.getLogger(__name__)
LEASE_S = 300.0
EXPIRE_EVERY_S = 5.0  # how often places held past LEASE_S are looked for, busy or not
# A job's running total is published when its first and last tasks go, and between them at most
# this often: a backlog dispatched in turns would otherwise publish one event per task or so (in
# a 10,000-image burst, as many as the outcomes, for the status view to fold).
PROGRESS_EVERY_S = 2.0
# Rounds handed to the producer, not yet acknowledged. Storing an acknowledged round's cursors
# holds no place: with PostgreSQL down they wait (bounded by the jobs queued), and a crash then
# dispatches those jobs' tasks again from their stored cursors, with the same task ids.
MAX_UNCONFIRMED_ROUNDS = 16
CURSOR_LINGER_S = 0.1  # acknowledged rounds' cursors are stored together this often (shared/group_commit.py)
EVENTS_KEPT = 20_000  # jobs whose JobSubmitted stays in memory while they are dispatched
# A tenant with work queued and fewer tasks out than this part of its weighted share of the
# window is starved: it gets a round at the first free place (`worth_a_round`)
STARVED_SHARE = 1 / 8
# A round takes at most 1/ROUND_PARTS of the window, and a backlog waits for that much room.
# Making a round (a task's event and encoding each) holds the event loop, so the producer could
# send none of a burst's first round of the whole window (2,048 tasks) until all of it was made.
# Now the dispatcher yields to the loop after each round, and the producer's sender, which needs
# a few turns of the loop to write, sends the first rounds' records while later rounds are made.
# The first result of a 10,000-image burst on the `make run` stack came 141, 165, 171 and 178 ms
# after its due time before, and 73, 80, 81 and 222 ms after (the last on a machine running slow
# throughout). At most MAX_UNCONFIRMED_ROUNDS rounds await their acknowledgements, so a window's
# rounds never wait for each other's.
ROUND_PARTS = 8
LATENESS = latency_histogram("imagejobs_scheduler_lateness_seconds", "First task emitted minus scheduled_time")
TASKS_EMITTED = Total("imagejobs_scheduler_tasks_emitted_total", "Image tasks emitted")
DISPATCHED = Total("imagejobs_tenant_dispatched_total", "Tasks handed to the processors", ["tenant"])
IN_FLIGHT = Gauge("imagejobs_tenant_tasks_in_flight", "Tasks handed to the processors, no outcome yet", ["tenant"])
BACKLOG = Gauge("imagejobs_tenant_backlog_images", "Images of released jobs waiting for their share", ["tenant"])


class Dispatcher:
    def __init__(self, settings: SchedulerSettings, store: DispatchStore, sender: TaskSender,
                 owned_share: Callable[[], float], watching: asyncio.Event | None = None) -> None:
        """`watching`: set once outcomes are watched; nothing is dispatched before (its outcome
        could be missed, and its place in the window held until the lease ends)."""
        self.settings, self.store, self.sender, self.owned_share = settings, store, sender, owned_share
        self.watching = watching
        # rounds' cursors acknowledged meanwhile are stored in one statement (shared/group_commit.py)
        self._cursor_writes: GroupCommit[tuple[UUID, int]] = GroupCommit(self._store_cursors, CURSOR_LINGER_S)
        self.queue: FairQueue[int] = FairQueue(parse_weights(settings.tenant_weights))
        self.wakeup = asyncio.Event()
        # job -> (partition, tenant label, tenant as queued), while queued or unconfirmed
        self._jobs: dict[UUID, tuple[int, str, str]] = {}
        self._events: dict[UUID, JobSubmitted] = {}
        self._positions: dict[UUID, list[tuple[int, int]]] = {}  # job -> its images' (visit, image)
        self.out = TasksOut()  # by tenant as queued; the metrics by its label
        self._labels_in_flight: set[str] = set()
        self._reported: dict[UUID, float] = {}  # job -> when its cursor was last published and stored
        self._acked: dict[UUID, int] = {}  # job -> tasks dispatched and acknowledged (stored or not)
        self._confirms: set[asyncio.Task[None]] = set()
        self._confirming = asyncio.Semaphore(MAX_UNCONFIRMED_ROUNDS)

    # -- what is to be dispatched -----------------------------------------------------------
    def add(self, job: JobSubmitted, partition: int, dispatched: int = 0) -> None:
        """A job just released (its event at hand), dispatched from `dispatched` on."""
        if len(self._events) < EVENTS_KEPT:
            self._events[job.job_id] = job
        self._queue_job(job.job_id, partition, job.owner, job.priority, job.total_images, dispatched)

    async def load(self, partitions: list[int]) -> None:
        """Taking over partitions: their released jobs whose tasks are not all dispatched."""
        self.add_loaded(await self.store.load_dispatching(partitions))

    def add_loaded(self, rows: list[DispatchRow]) -> None:
        """Released jobs found half dispatched on taking over their partitions."""
        for row in rows:
            self._queue_job(row.job_id, row.partition, row.tenant, row.priority, row.total, row.dispatched)

    def _queue_job(self, job_id: UUID, partition: int, tenant: str | None, priority: int, total: int,
                   dispatched: int) -> None:
        if dispatched >= total:  # every task went out before a crash: nothing to queue, nor to keep
            self._events.pop(job_id, None)
            return
        self._jobs[job_id] = (partition, tenant_label(tenant), tenant or "")
        self.queue.add(tenant or "", priority, job_id, CursorLane(total, dispatched))
        self.wakeup.set()

    def busy(self) -> bool:
        """Tasks are out: the processors' progress is worth asking for."""
        return len(self.out) > 0

    def processed(self, committed: dict[int, int]) -> None:
        """The processors' committed offsets per tasks partition: the tasks below them are
        done, and their places in the window free."""
        if self.out.processed(committed):
            self._gauge_in_flight()
            self.wakeup.set()

    async def forget(self, lost: set[int]) -> None:
        """Partitions revoked: let rounds be confirmed, then drop their jobs (their new owner
        loads them with the cursors just stored)."""
        await self.store_cursors(lost)
        for job_id, (partition, *_) in list(self._jobs.items()):
            if partition in lost:
                self.queue.remove(job_id)
                self._drop(job_id)

    # -- dispatching ------------------------------------------------------------------------
    def window(self) -> int:
        """This instance's part of DISPATCH_WINDOW (by the partitions it owns)."""
        return round(self.settings.dispatch_window * self.owned_share())

    def room(self) -> int:
        return max(0, self.window() - len(self.out))

    def worth_a_round(self, room: int) -> bool:
        """Room for everything queued, or for a good part of the window: a round has a fixed cost
        (a produce round, a cursor update, running totals), so a backlog refills the window in
        rounds of an eighth of it rather than a task per outcome seen. But a tenant with work
        queued and next to nothing out gets a round at the first free place: waiting for an
        eighth of a full window to drain cost its one-image job ~1 s with the GPU on (256 places
        free a second)."""
        if room <= 0 or not len(self.queue):
            return False
        window = self.window()
        return room >= len(self.queue) or room >= self._full_round(window) or self._starved_waiting(window)

    def round_size(self, room: int) -> int:
        """The tasks the next round takes: what there is room for, at most 1/ROUND_PARTS of the window."""
        return min(room, self._full_round(self.window()))

    @staticmethod
    def _full_round(window: int) -> int:
        return max(1, window // ROUND_PARTS)

    def _starved_waiting(self, window: int) -> bool:
        """A tenant with work queued has fewer tasks out than STARVED_SHARE of its weighted share
        of the window. Not only a tenant with nothing out: a task stays out until the processors'
        committed offset passes it, so a tenant's finished task still counts while another
        tenant's earlier tasks in its partition wait their GPU time. Its next job then waited
        for an eighth of the window to drain (`make bench`, fairness scenario 2, B's one-image jobs
        behind A's backlog with the GPU on: dispatched 241 / 1,056 ms (p50 / p99) after their
        submit before, 47 / 49 ms after)."""
        queued = self.queue.units_by_tenant()
        out = self.out.by_tenant
        weights = {tenant: self.queue.weight(tenant) for tenant in {*queued, *out}}
        total = sum(weights.values())
        return any(out.get(tenant, 0) < window * weights[tenant] / total * STARVED_SHARE for tenant in queued)

    async def run(self) -> None:
        if self.watching is not None:
            await self.watching.wait()
        # Leases are looked at on a timer of their own: looked at only when the loop had waited
        # 5 s for a wake-up, they were never looked at while other tasks kept finishing
        next_expiry = time.monotonic() + EXPIRE_EVERY_S
        while True:
            if time.monotonic() >= next_expiry:
                self._expire()
                next_expiry = time.monotonic() + EXPIRE_EVERY_S
            self.wakeup.clear()  # before looking, so no wake-up is missed
            room = self.room()
            if not self.worth_a_round(room):
                await woken_within(self.wakeup, next_expiry - time.monotonic())
                continue
            await self._round(self.queue.take(self.round_size(room)))
            await asyncio.sleep(0)  # a turn of the loop: the producer's sender runs between rounds (ROUND_PARTS)

    async def _round(self, picks: list[tuple[Any, int]]) -> None:
        """Hand the picked tasks and the touched jobs' totals to the producer; a confirmation
        task waits for the acknowledgements and stores the cursors."""
        events = await retry_record_work("loading jobs to dispatch", lambda: self._events_of({j for j, _ in picks}))
        partitions = await self.sender.partitions()
        busy = self.out.loads(partitions)  # tasks out per tasks partition, this round's counted as they go
        cursors: dict[UUID, int] = {}
        sends: list[TaskRecord] = []
        by_tenant: Counter[str] = Counter()  # tasks sent, by tenant label
        now, stamp = time.monotonic(), utcnow()
        for job_id, ordinal in picks:
            job = events.get(job_id)
            if job is None or job_id not in self._jobs:
                continue  # no longer in the schedule, or dropped (its partition revoked) while loading
            positions = self._positions.get(job_id)
            if positions is None:
                positions = self._positions[job_id] = image_positions(job)
            task = task_at(job, positions[ordinal], stamp)
            partition = least_busy_partition(task_partition(job_id, ordinal, partitions), busy)
            busy[partition] += 1
            sends.append((self.settings.topics.tasks, encode_event(task), task.task_id.encode(), partition))
            self.out.dispatched(task.task_id, self._jobs[job_id][2], now, partition)
            by_tenant[self._jobs[job_id][1]] += 1
            cursors[job_id] = max(cursors.get(job_id, 0), ordinal + 1)
            if ordinal == 0:
                late = max(0.0, (stamp - job.scheduled_time).total_seconds())
                LATENESS.observe(late)
                STAGE["released"].observe(late)
        milestones = self._milestones(cursors, events, now)
        sends.extend(self._progress_records(milestones, stamp))
        acks = await self.sender.send(sends)
        self._count(by_tenant)
        await self._confirming.acquire()
        confirm = asyncio.create_task(self._confirm(sends, acks, cursors, milestones))
        self._confirms.add(confirm)
        confirm.add_done_callback(self._confirms.discard)
        exit_if_it_dies(confirm, "confirming a dispatch")  # restarted, the cursors say where to go on

    def _milestones(self, cursors: dict[UUID, int], events: dict[UUID, JobSubmitted], now: float) -> dict[UUID, int]:
        """The cursors worth publishing (`TasksDispatched`) and storing: a job's first and last
        rounds, and otherwise at most one every PROGRESS_EVERY_S per job. A backlog dispatched
        in turns would else publish and store one per task or so (in a 10,000-image burst, ten
        thousand row updates and as many events as outcomes). A crash dispatches again at most
        that much of each job, with the same task ids; a revocation or a stop stores them all."""
        out = {}
        for job_id, cursor in cursors.items():
            last = self._reported.get(job_id)
            finished = cursor >= events[job_id].total_images
            if last is None or finished or now - last >= PROGRESS_EVERY_S:
                out[job_id] = cursor
                self._reported[job_id] = now
            if finished:
                self._reported.pop(job_id, None)
        return out

    def _progress_records(self, milestones: dict[UUID, int], stamp: datetime) -> list[tuple[str, bytes, bytes, int]]:
        """The round's running totals (`TasksDispatched`): one record per partition of the jobs
        topic (each job's own, so its events stay in order), carrying up to
        MAX_JOBS_PER_DISPATCH_EVENT jobs, keyed by the first."""
        by_partition: dict[int, list[tuple[UUID, int]]] = {}
        for job_id, cursor in milestones.items():
            by_partition.setdefault(self._jobs[job_id][0], []).append((job_id, cursor))
        records = []
        for partition, totals in by_partition.items():
            for start in range(0, len(totals), MAX_JOBS_PER_DISPATCH_EVENT):
                (job_id, cursor), *others = totals[start:start + MAX_JOBS_PER_DISPATCH_EVENT]
                progress = TasksDispatched.model_construct(**envelope(TasksDispatched, stamp), job_id=job_id,
                                                           dispatched=cursor, others=dict(others))
                records.append((self.settings.topics.jobs, encode_event(progress), str(job_id).encode(), partition))
        return records

    async def _confirm(self, sends: list[TaskRecord], acks: Acks,
                       cursors: dict[UUID, int], milestones: dict[UUID, int]) -> None:
        try:
            await retry_record_work("dispatching tasks", lambda: wait_or_resend(acks, lambda: self.sender.send(sends)))
        finally:
            self._confirming.release()  # acknowledged: storing the cursors waits without holding a place
        self._note_offsets(sends, acks)
        for job_id, cursor in cursors.items():
            self._acked[job_id] = max(cursor, self._acked.get(job_id, 0))
        if milestones:
            await retry_record_work("storing dispatch cursors",
                                    lambda: self._cursor_writes.write(milestones.items()))
        for job_id in cursors:
            if job_id not in self.queue and job_id in milestones:  # its last task is out and stored
                self._drop(job_id)

    async def _store_cursors(self, cursors: list[tuple[UUID, int]]) -> None:
        """Several rounds' cursors at once: a job in more than one keeps its furthest."""
        furthest: dict[UUID, int] = {}
        for job_id, cursor in cursors:
            furthest[job_id] = max(cursor, furthest.get(job_id, 0))
        await self.store.record_dispatched(furthest)

    def _note_offsets(self, sends: list[TaskRecord], acks: Acks) -> None:
        """Where each task of an acknowledged round landed: it is done once the processors'
        committed offset there passes it."""
        tasks_topic = self.settings.topics.tasks
        for (topic, _, key, _), ack in zip(sends, acks, strict=True):
            if topic == tasks_topic:
                landed: Any = ack.result()
                self.out.landed(key.decode(), landed.partition, landed.offset)

    async def store_cursors(self, partitions: set[int] | None = None) -> None:
        """Store every acknowledged cursor (of `partitions`; None: all): before a revocation or a
        stop, so whoever goes on with these jobs dispatches nothing twice."""
        await self.wait_confirmed()
        cursors = {job_id: cursor for job_id, cursor in self._acked.items()
                   if partitions is None or self._jobs.get(job_id, (None,))[0] in partitions}
        if cursors:
            await retry_record_work("storing dispatch cursors", lambda: self.store.record_dispatched(cursors))

    def _drop(self, job_id: UUID) -> None:
        self._reported.pop(job_id, None)
        self._acked.pop(job_id, None)
        self._jobs.pop(job_id, None)
        self._events.pop(job_id, None)
        self._positions.pop(job_id, None)

    async def wait_confirmed(self) -> None:
        await asyncio.gather(*list(self._confirms), return_exceptions=True)

    async def _events_of(self, job_ids: set[UUID]) -> dict[UUID, JobSubmitted]:
        """The jobs' events: from memory, else read back from the schedule (kept there)."""
        cold = [j for j in job_ids if j not in self._events]
        found = {j: self._events[j] for j in job_ids if j in self._events}
        if cold:
            for raw in await self.store.job_events(cold):
                job = JobSubmitted.model_validate_json(raw)
                found[job.job_id] = job
                if len(self._events) < EVENTS_KEPT:
                    self._events[job.job_id] = job
        return found

    # -- accounting -------------------------------------------------------------------------
    def _count(self, by_tenant: Counter[str]) -> None:
        """A round's tasks, counted as it made them: a job its partition's revocation dropped
        while the round was sent is in the counts and no longer in `_jobs`."""
        for tenant, n in by_tenant.items():
            DISPATCHED.labels(tenant).inc(n)
        TASKS_EMITTED.inc(sum(by_tenant.values()))
        self._gauge_in_flight()
        BACKLOG.clear()
        for tenant, units in self.queue.units_by_tenant().items():
            BACKLOG.labels(tenant_label(tenant)).set(units)

    def _gauge_in_flight(self) -> None:
        by_label: Counter[str] = Counter()
        for tenant, n in self.out.by_tenant.items():
            by_label[tenant_label(tenant or None)] += n
        for label in self._labels_in_flight - set(by_label):
            IN_FLIGHT.labels(label).set(0)
        for label, n in by_label.items():
            IN_FLIGHT.labels(label).set(n)
        self._labels_in_flight = set(by_label)

    def _expire(self) -> None:
        """Places held longer than LEASE_S are freed (the processors' offset never passed them)."""
        stale = self.out.expire(time.monotonic() - LEASE_S)
        if stale:
            log.warning("%d dispatched tasks were not done in %.0fs; freeing their places", len(stale), LEASE_S)
            self._gauge_in_flight()
            self.wakeup.set()

    def details(self) -> dict[str, object]:
        return {"tasks_out": len(self.out), "tasks_waiting": len(self.queue), "jobs_dispatching": len(self._jobs)}


async def wait_or_resend(acks: Acks, resend: Callable[[], Awaitable[Acks]]) -> None:
    """The acknowledgements; if any failed, everything is sent again (the same task ids and
    running totals: repeats change nothing) and the failure raised for the retry."""
    try:
        await asyncio.gather(*acks)
    except Exception:
        acks[:] = await resend()
        raise
