"""Fair dispatch: released jobs' tasks go to the tasks topic only as fast as the processors take
them, chosen fairly (shared/fairness.py: tenants by weight, a tenant's jobs by priority, then in
turn), so the tasks topic stays shallow and a small job never waits for someone else's backlog.

At most `DISPATCH_WINDOW` tasks are out (handed to Kafka, no outcome seen yet); a completion
watcher reads the outcomes' `task_id` header off the results topic and frees their places. A
round takes as many tasks as there is room for, hands them to the idempotent producer
(`tasks_for` order within a job, each to the partition `task_partition` gives it, as before)
together with each touched job's running total (`TasksDispatched`), and a confirmation task
waits for the acknowledgements and stores each job's cursor. A crash in between dispatches
again from the stored cursor: the same task ids, which the processors and the status fold
ignore as repeats. Nothing is lost or doubled in effect.

The window is a throughput bound, not a correctness one: a task whose outcome is never seen
(its outcome is on a partition added after start, say) frees its place after LEASE_S.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from uuid import UUID

from prometheus_client import Counter as Total
from prometheus_client import Gauge

from services.scheduler.adapters.store import DispatchRow, job_events, record_dispatched
from services.scheduler.domain import image_positions, task_at, task_partition
from services.scheduler.settings import SchedulerSettings
from shared.events import JobSubmitted, TasksDispatched, encode_event, envelope, utcnow
from shared.fairness import CursorLane, FairQueue, parse_weights
from shared.metrics import STAGE, latency_histogram, tenant_label
from shared.retry import retry_record_work
from shared.runtime import Runtime, exit_if_it_dies

log = logging.getLogger(__name__)
LEASE_S = 300.0
# A job's running total is published when its first and last tasks go, and between them at most
# this often: a backlog dispatched in turns would otherwise publish one event per task or so (in
# a 10,000-image burst, as many as the outcomes, for the status view to fold).
PROGRESS_EVERY_S = 2.0
MAX_UNCONFIRMED_ROUNDS = 16
EVENTS_KEPT = 20_000  # jobs whose JobSubmitted stays in memory while they are dispatched
Acks = list[asyncio.Future[object]]
LATENESS = latency_histogram("imagejobs_scheduler_lateness_seconds", "First task emitted minus scheduled_time")
TASKS_EMITTED = Total("imagejobs_scheduler_tasks_emitted_total", "Image tasks emitted")
DISPATCHED = Total("imagejobs_tenant_dispatched_total", "Tasks handed to the processors", ["tenant"])
IN_FLIGHT = Gauge("imagejobs_tenant_tasks_in_flight", "Tasks handed to the processors, no outcome yet", ["tenant"])
BACKLOG = Gauge("imagejobs_tenant_backlog_images", "Images of released jobs waiting for their share", ["tenant"])


class Dispatcher:
    def __init__(self, settings: SchedulerSettings, runtime: Runtime, owned_share: Callable[[], float],
                 watching: asyncio.Event | None = None) -> None:
        """`watching`: set once outcomes are watched; nothing is dispatched before (its outcome
        could be missed, and its place in the window held until the lease ends)."""
        self.settings, self.runtime, self.owned_share = settings, runtime, owned_share
        self.watching = watching
        self.queue: FairQueue[int] = FairQueue(parse_weights(settings.tenant_weights))
        self.wakeup = asyncio.Event()
        self._jobs: dict[UUID, tuple[int, str]] = {}  # job -> (partition, tenant label), while queued or unconfirmed
        self._events: dict[UUID, JobSubmitted] = {}
        self._positions: dict[UUID, list[tuple[int, int]]] = {}  # job -> its images' (visit, image)
        self._out: dict[str, tuple[str, float]] = {}  # task_id -> (tenant label, when dispatched)
        self._out_by_tenant: Counter[str] = Counter()  # the same, counted (kept as tasks come and go)
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

    def add_loaded(self, rows: list[DispatchRow]) -> None:
        """Released jobs found half dispatched on taking over their partitions."""
        for row in rows:
            self._queue_job(row.job_id, row.partition, row.tenant, row.priority, row.total, row.dispatched)

    def _queue_job(self, job_id: UUID, partition: int, tenant: str | None, priority: int, total: int,
                   dispatched: int) -> None:
        self._jobs[job_id] = (partition, tenant_label(tenant))
        self.queue.add(tenant or "", priority, job_id, CursorLane(total, dispatched))
        self.wakeup.set()

    def completed(self, task_ids: list[str]) -> None:
        """Outcomes seen: their places in the window are free."""
        freed = [self._out.pop(t) for t in task_ids if t in self._out]
        if freed:
            self._out_by_tenant.subtract(tenant for tenant, _ in freed)
            self._gauge_in_flight()
            self.wakeup.set()

    async def forget(self, lost: set[int]) -> None:
        """Partitions revoked: let rounds be confirmed, then drop their jobs (their new owner
        loads them with the cursors just stored)."""
        await self.store_cursors(lost)
        for job_id, (partition, _) in list(self._jobs.items()):
            if partition in lost:
                self.queue.remove(job_id)
                self._drop(job_id)

    # -- dispatching ------------------------------------------------------------------------
    def room(self) -> int:
        return max(0, round(self.settings.dispatch_window * self.owned_share()) - len(self._out))

    def worth_a_round(self, room: int) -> bool:
        """Room for everything queued, or for a good part of the window: a round has a fixed cost
        (a produce round, a cursor update, running totals), so a backlog refills the window in
        rounds of an eighth of it rather than a task per outcome seen."""
        return room > 0 and len(self.queue) > 0 and (
            room >= len(self.queue) or room * 8 >= round(self.settings.dispatch_window * self.owned_share()))

    async def run(self) -> None:
        if self.watching is not None:
            await self.watching.wait()
        while True:
            self.wakeup.clear()  # before looking, so no wake-up is missed
            room = self.room()
            if not self.worth_a_round(room):
                try:
                    await asyncio.wait_for(self.wakeup.wait(), 5.0)
                except TimeoutError:
                    self._expire()
                continue
            await self._round(self.queue.take(room))

    async def _round(self, picks: list[tuple[Any, int]]) -> None:
        """Hand the picked tasks and the touched jobs' totals to the producer; a confirmation
        task waits for the acknowledgements and stores the cursors."""
        events = await retry_record_work("loading jobs to dispatch", lambda: self._events_of({j for j, _ in picks}))
        partitions = len(await self.runtime.producer.partitions_for(self.settings.topics.tasks))
        cursors: dict[UUID, int] = {}
        sends: list[tuple[str, bytes, bytes, int | None]] = []
        now, stamp = time.monotonic(), utcnow()
        for job_id, ordinal in picks:
            job = events.get(job_id)
            if job is None:
                continue  # no longer in the schedule (its partition was taken over meanwhile)
            positions = self._positions.get(job_id)
            if positions is None:
                positions = self._positions[job_id] = image_positions(job)
            task = task_at(job, positions[ordinal], stamp)
            sends.append((self.settings.topics.tasks, encode_event(task), task.task_id.encode(),
                          task_partition(job_id, ordinal, partitions)))
            self._out[task.task_id] = (self._jobs[job_id][1], now)
            self._out_by_tenant[self._jobs[job_id][1]] += 1
            cursors[job_id] = max(cursors.get(job_id, 0), ordinal + 1)
            if ordinal == 0:
                late = max(0.0, (stamp - job.scheduled_time).total_seconds())
                LATENESS.observe(late)
                STAGE["released"].observe(late)
        milestones = self._milestones(cursors, events, now)
        for job_id, cursor in milestones.items():
            progress = TasksDispatched.model_construct(**envelope(TasksDispatched, stamp), job_id=job_id,
                                                       dispatched=cursor)
            sends.append((self.settings.topics.jobs, encode_event(progress), str(job_id).encode(), None))
        acks = await self._send(sends)
        self._count(picks, events)
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

    async def _send(self, sends: list[tuple[str, bytes, bytes, int | None]]) -> Acks:
        producer = self.runtime.producer
        return [await producer.send(topic, value, key=key, partition=partition)
                for topic, value, key, partition in sends]

    async def _confirm(self, sends: list[tuple[str, bytes, bytes, int | None]], acks: Acks,
                       cursors: dict[UUID, int], milestones: dict[UUID, int]) -> None:
        try:
            await retry_record_work("dispatching tasks", lambda: wait_or_resend(acks, lambda: self._send(sends)))
            for job_id, cursor in cursors.items():
                self._acked[job_id] = max(cursor, self._acked.get(job_id, 0))
            if milestones:
                await retry_record_work("storing dispatch cursors",
                                        lambda: record_dispatched(self.runtime.pool, milestones))
            for job_id in cursors:
                if job_id not in self.queue and job_id in milestones:  # its last task is out and stored
                    self._drop(job_id)
        finally:
            self._confirming.release()

    async def store_cursors(self, partitions: set[int] | None = None) -> None:
        """Store every acknowledged cursor (of `partitions`; None: all): before a revocation or a
        stop, so whoever goes on with these jobs dispatches nothing twice."""
        await self.wait_confirmed()
        cursors = {job_id: cursor for job_id, cursor in self._acked.items()
                   if partitions is None or self._jobs.get(job_id, (None,))[0] in partitions}
        if cursors:
            await retry_record_work("storing dispatch cursors", lambda: record_dispatched(self.runtime.pool, cursors))

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
            for raw in await job_events(self.runtime.pool, cold):
                job = JobSubmitted.model_validate_json(raw)
                found[job.job_id] = job
                if len(self._events) < EVENTS_KEPT:
                    self._events[job.job_id] = job
        return found

    # -- accounting -------------------------------------------------------------------------
    def _count(self, picks: list[tuple[Any, int]], events: dict[UUID, JobSubmitted]) -> None:
        by_tenant = Counter(self._jobs[job_id][1] for job_id, _ in picks if job_id in events)
        for tenant, n in by_tenant.items():
            DISPATCHED.labels(tenant).inc(n)
        TASKS_EMITTED.inc(sum(by_tenant.values()))
        self._gauge_in_flight()
        BACKLOG.clear()
        for tenant, units in self.queue.units_by_tenant().items():
            BACKLOG.labels(tenant_label(tenant)).set(units)

    def _gauge_in_flight(self) -> None:
        for tenant, n in list(self._out_by_tenant.items()):
            IN_FLIGHT.labels(tenant).set(n)
            if not n:
                del self._out_by_tenant[tenant]

    def _expire(self) -> None:
        """Places held longer than LEASE_S are freed (their outcome was not seen)."""
        cutoff = time.monotonic() - LEASE_S
        stale = [task_id for task_id, (_, at) in self._out.items() if at < cutoff]
        if stale:
            log.warning("%d dispatched tasks had no outcome in %.0fs; freeing their places", len(stale), LEASE_S)
            self.completed(stale)

    def details(self) -> dict[str, object]:
        return {"tasks_out": len(self._out), "tasks_waiting": len(self.queue), "jobs_dispatching": len(self._jobs)}


async def wait_or_resend(acks: Acks, resend: Callable[[], Any]) -> None:
    """The acknowledgements; if any failed, everything is sent again (the same task ids and
    running totals: repeats change nothing) and the failure raised for the retry."""
    try:
        await asyncio.gather(*acks)
    except Exception:
        acks[:] = await resend()
        raise
