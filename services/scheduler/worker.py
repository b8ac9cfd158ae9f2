"""The scheduler's loops: consume the jobs topic into the durable schedule, release due jobs,
and decide cancel and reschedule commands.

Consume: each batch's `JobSubmitted` are inserted into `scheduler_jobs` in one transaction
(ON CONFLICT DO NOTHING), its commands decided (commands.py), then the offsets are committed,
so a submitted job or a command is never lost. Release: a timer sleeps exactly until the
earliest due time (woken early when an earlier job arrives) and hands the due jobs' tasks and
`JobReleased` to the idempotent producer (acks=all); a confirmation task waits for the
acknowledgements and only then marks the rows released, while the loop goes on releasing the
next due jobs. A crash before the mark re-releases the job on restart; tasks keep their
`task_id`, so the processors and the status fold ignore the repeat: nothing fires twice in
effect. Jobs due within a few seconds keep their event in memory, so releasing them reads
nothing.

Releases and command decisions take the same lock: a command sees a job either waiting in the
timer (accepted) or popped for release (refused), and a refusal is handed to the producer
after the `JobReleased` of the release that won, so the status view folds them in that order.

Several instances may run: each owns the partitions Kafka assigns it and releases (and
decides for) only the jobs of those partitions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

from aiokafka import ConsumerRebalanceListener, TopicPartition
from prometheus_client import Counter, Gauge

from services.scheduler.commands import record_decisions
from services.scheduler.domain import Command, Decision, Schedule, decision_event, released, tasks_for
from services.scheduler.settings import SchedulerSettings
from services.scheduler.store import load_pending, mark_released, pending_events, store_submitted
from shared.consumer import Batch, ConsumerLoop
from shared.events import JobCancelRequested, JobRescheduleRequested, JobSubmitted, encode_event
from shared.metrics import STAGE, latency_histogram
from shared.runtime import Runtime, exit_if_it_dies, retry_forever

log = logging.getLogger(__name__)
HOT_HORIZON_S = 5.0
PREFETCH_S = 1.0  # how far ahead of their due time jobs' events are read into memory
PREFETCH_EVERY_S = 0.25
HOT_MAX = 20_000
Submitted = list[tuple[int, JobSubmitted]]  # (partition, event)
Commands = list[tuple[int, Command]]
MAX_UNCONFIRMED_RELEASES = 16  # release batches handed to the producer, not yet acknowledged
PENDING = Gauge("imagejobs_scheduler_pending_jobs", "Jobs waiting for their time (this instance)")
RELEASED = Counter("imagejobs_scheduler_released_total", "Jobs released")
TASKS_EMITTED = Counter("imagejobs_scheduler_tasks_emitted_total", "Image tasks emitted")
COMMANDS = Counter("imagejobs_scheduler_commands_total", "Cancel and reschedule commands decided",
                   ["command", "decision"])
LATENESS = latency_histogram("imagejobs_scheduler_lateness_seconds",
                             "Task emission time minus scheduled_time")


class SchedulerWorker(ConsumerRebalanceListener):
    def __init__(self, settings: SchedulerSettings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.schedule = Schedule()
        self.wakeup = asyncio.Event()
        self.loop = ConsumerLoop(settings, runtime, "scheduler", [settings.topics.jobs], self._on_batch,
                                 commit="after_batch", listener=self, max_records=2000, timeout_ms=500)
        self._tasks: list[asyncio.Task[None]] = []
        self._release_lock = asyncio.Lock()
        # JobSubmitted events of jobs due within HOT_HORIZON_S, kept from the consume loop so
        # their release needs no read of the table (bounded: beyond it the table is read).
        self._hot: dict[UUID, tuple[int, JobSubmitted]] = {}
        self._confirms: set[asyncio.Task[None]] = set()
        self._changed_while_prefetching: set[UUID] | None = None
        # job_id -> partition of jobs already due when loaded on assignment: the previous owner
        # may have released them just before it died, so no command may take them back until
        # this instance has released them too
        self._maybe_released: dict[UUID, int] = {}
        self._confirming = asyncio.Semaphore(MAX_UNCONFIRMED_RELEASES)

    def details(self) -> dict[str, object]:
        """For /readyz: the partitions this instance owns and the jobs it holds."""
        return {"assigned_partitions": sorted(tp.partition for tp in self.loop.owned()),
                "pending_jobs": len(self.schedule)}

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self.loop.run()), asyncio.create_task(self._release_loop()),
                       asyncio.create_task(self._prefetch_loop())]
        for task, what in zip(self._tasks, ("consumer loop", "release loop", "read-ahead"), strict=True):
            exit_if_it_dies(task, f"the scheduler's {what}")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._wait_confirmed()  # releases handed to the producer get marked (bounded by the caller)
        await self.loop.close()

    async def _on_batch(self, batch: Batch) -> None:
        """Store the batch's submissions, then decide its commands (a command follows its
        job on the partition); the loop commits the offsets after."""
        submitted: Submitted = []
        commands: Commands = []
        for delivery in batch.deliveries:
            if isinstance(delivery.event, JobSubmitted):
                submitted.append((delivery.tp.partition, delivery.event))
            elif isinstance(delivery.event, JobCancelRequested | JobRescheduleRequested):
                commands.append((delivery.tp.partition, delivery.event))
        if submitted:
            await retry_forever("storing submitted jobs", lambda: store_submitted(self.runtime.pool, submitted))
            self._schedule(submitted)
        if commands:
            await self._decide(commands)

    def _schedule(self, submitted: Submitted) -> None:
        """Add the stored jobs of partitions still owned to the timer (a revoked partition's new
        owner loads them from the table); wake the release loop if one is due earlier."""
        owned = {tp.partition for tp in self.loop.owned()}
        earliest = self.schedule.next_due_at()
        horizon = datetime.now(UTC) + timedelta(seconds=HOT_HORIZON_S)
        for partition, event in submitted:
            if partition not in owned or not self.schedule.add(event.job_id, event.scheduled_time, partition):
                continue
            if event.scheduled_time <= horizon and len(self._hot) < HOT_MAX:
                self._hot[event.job_id] = (partition, event)
            if earliest is None or event.scheduled_time < earliest:
                self.wakeup.set()
        PENDING.set(len(self.schedule))

    # -- commands: cancel and reschedule ---------------------------------------------------
    async def _decide(self, commands: Commands) -> None:
        """Decide, apply to memory and hand the decisions to the producer under the release
        lock (so they are ordered after any release that claimed the job first), then wait
        for their acknowledgement before the offsets are committed."""
        async with self._release_lock:
            decided = await retry_forever("deciding commands", lambda: record_decisions(
                self.runtime.pool, [c for _, c in commands], self._holds))
            partition_of = {c.job_id: p for p, c in commands}
            self._apply_decisions([d for d, new in decided if new], partition_of)
            decisions = [d for d, _ in decided]
            acks = await self._send_decisions(decisions)
        await retry_forever("publishing decisions", lambda: self._wait_or_resend(
            acks, lambda: self._send_decisions(decisions)))
        for decision in decisions:
            COMMANDS.labels(decision.command, "accepted" if decision.accepted else "refused").inc()

    def _holds(self, job_id: UUID) -> bool:
        """The job waits in this instance's timer and no release of it can have begun."""
        return job_id in self.schedule and job_id not in self._maybe_released

    def _apply_decisions(self, decisions: list[Decision], partition_of: dict[UUID, int]) -> None:
        """The in-memory schedule follows the table: a cancelled job is forgotten, a moved one
        falls due at its new time (its event is read again from the table when it does)."""
        owned = {tp.partition for tp in self.loop.owned()}
        for d in (d for d in decisions if d.accepted):
            self._hot.pop(d.job_id, None)
            if self._changed_while_prefetching is not None:
                self._changed_while_prefetching.add(d.job_id)  # a read-ahead in flight must not keep it
            if d.command == "cancel":
                self.schedule.remove(d.job_id)
            elif partition_of[d.job_id] in owned and d.scheduled_time is not None:
                earliest = self.schedule.next_due_at()
                self.schedule.move(d.job_id, d.scheduled_time, partition_of[d.job_id])
                if earliest is None or d.scheduled_time < earliest:
                    self.wakeup.set()
        PENDING.set(len(self.schedule))

    async def _send_decisions(self, decisions: list[Decision]) -> list[asyncio.Future[object]]:
        topic, producer = self.settings.topics.jobs, self.runtime.producer
        return [await producer.send(topic, encode_event(decision_event(d)), key=str(d.job_id).encode())
                for d in decisions]

    # -- rebalance: load the pending jobs of newly owned partitions -----------------------
    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self._release_lock:  # let an in-flight release finish first
            await self._wait_confirmed()
            lost = {tp.partition for tp in revoked}
            self.schedule.drop_partitions(lost)
            self._hot = {j: h for j, h in self._hot.items() if h[0] not in lost}
            self._maybe_released = {j: p for j, p in self._maybe_released.items() if p not in lost}

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        partitions = [tp.partition for tp in assigned]
        await retry_forever("loading pending jobs", lambda: self._load(partitions))
        self.wakeup.set()

    async def _load(self, partitions: list[int]) -> None:
        now = datetime.now(UTC)
        for job_id, due_at, partition in await load_pending(self.runtime.pool, partitions):
            if self.schedule.add(job_id, due_at, partition) and due_at <= now:
                self._maybe_released[job_id] = partition
        PENDING.set(len(self.schedule))
        log.info("owning partitions %s; %d jobs pending", partitions, len(self.schedule))

    # -- release ----------------------------------------------------------------------------
    async def _release_loop(self) -> None:
        while True:
            self.wakeup.clear()  # before reading the schedule, so no wake-up is missed
            next_due = self.schedule.next_due_at()
            delay = 3600.0 if next_due is None else (next_due - datetime.now(UTC)).total_seconds()
            if delay > 0:
                try:
                    await asyncio.wait_for(self.wakeup.wait(), timeout=min(delay, 3600.0))
                except TimeoutError:
                    pass
                continue
            async with self._release_lock:
                due = self.schedule.pop_due(datetime.now(UTC), self.settings.scheduler_release_batch)
                for job_id in due:
                    self._maybe_released.pop(job_id, None)
                jobs = await retry_forever("loading due jobs", lambda d=due: self._load_events(d)) if due else []
                if jobs:
                    acks = await retry_forever("releasing jobs", lambda j=jobs: self._emit(j))
                    await self._confirming.acquire()
                    confirm = asyncio.create_task(self._confirm(jobs, acks))
                    self._confirms.add(confirm)
                    confirm.add_done_callback(self._confirms.discard)
                    exit_if_it_dies(confirm, "confirming a release")  # restarted, the release is redone
            PENDING.set(len(self.schedule))

    async def _prefetch_loop(self) -> None:
        """Read ahead, beside the release loop (never blocking it), the events of jobs due within
        PREFETCH_S, so that when they fall due their release reads nothing: the timer's
        precision is one produce call, not a query. A failure is only logged: those jobs are
        then read at their due time."""
        while True:
            try:
                await self._prefetch()
            except Exception as exc:  # noqa: BLE001 - the due-time read is the fallback
                log.warning("reading due jobs ahead failed (%s); they will be read when due", exc)
            await asyncio.sleep(PREFETCH_EVERY_S)

    async def _prefetch(self) -> None:
        horizon = datetime.now(UTC) + timedelta(seconds=PREFETCH_S)
        wanted = [(j, p) for j, p in self.schedule.due_before(horizon, HOT_MAX - len(self._hot))
                  if j not in self._hot]
        if not wanted:
            return
        self._changed_while_prefetching = set()
        try:
            rows = await pending_events(self.runtime.pool, [j for j, _ in wanted])
            partition_of = dict(wanted)
            for start in range(0, len(rows), 100):
                for raw in rows[start:start + 100]:
                    event = JobSubmitted.model_validate_json(raw)
                    # still pending here (not released, revoked, cancelled or moved meanwhile)
                    if event.job_id in self.schedule and event.job_id not in self._changed_while_prefetching:
                        self._hot[event.job_id] = (partition_of[event.job_id], event)
                await asyncio.sleep(0)  # parse in slices: a release due now goes first
        finally:
            self._changed_while_prefetching = None

    async def _load_events(self, job_ids: list[UUID]) -> list[JobSubmitted]:
        """The due jobs' events: from memory when read ahead or stored just now, else from
        the table."""
        hot = [self._hot.pop(j)[1] for j in job_ids if j in self._hot]
        found = {e.job_id for e in hot}
        cold = [j for j in job_ids if j not in found]
        if not cold:
            return hot
        rows = await pending_events(self.runtime.pool, cold)
        return hot + [JobSubmitted.model_validate_json(raw) for raw in rows]

    async def _emit(self, jobs: list[JobSubmitted]) -> list[asyncio.Future[object]]:
        """Hand every task and `JobReleased` to the producer (in order per job); returns the
        acknowledgements to wait for. Not waiting here lets the next due jobs go out while the
        broker acknowledges these: lateness stays one produce call, not one round trip."""
        producer, topics = self.runtime.producer, self.settings.topics
        acks = []
        now = datetime.now(UTC)
        for job in jobs:
            for task in tasks_for(job):
                acks.append(await producer.send(topics.tasks, encode_event(task), key=task.task_id.encode()))
            acks.append(await producer.send(topics.jobs, encode_event(released(job)),
                                            key=str(job.job_id).encode()))
            late = max(0.0, (now - job.scheduled_time).total_seconds())
            LATENESS.observe(late)
            STAGE["released"].observe(late)
        return acks

    async def _confirm(self, jobs: list[JobSubmitted], acks: list[asyncio.Future[object]]) -> None:
        """After the broker acknowledged every record of `jobs`, mark them released. Until then
        a crash re-releases them on restart (tasks keep their task_id: nothing twice in effect)."""
        try:
            await retry_forever("releasing jobs", lambda: self._wait_or_resend(acks, lambda: self._emit(jobs)))
            job_ids = [j.job_id for j in jobs]
            await retry_forever("marking jobs released", lambda: mark_released(self.runtime.pool, job_ids))
            for job in jobs:
                TASKS_EMITTED.inc(job.total_images)
            RELEASED.inc(len(jobs))
        finally:
            self._confirming.release()

    @staticmethod
    async def _wait_or_resend(acks: list[asyncio.Future[object]],
                              resend: Callable[[], Awaitable[list[asyncio.Future[object]]]]) -> None:
        """The acknowledgements; if any failed, everything is sent again (consumers ignore
        repeats: same task ids, same command ids) and the failure raised for the retry."""
        try:
            await asyncio.gather(*acks)
        except Exception:
            acks[:] = await resend()
            raise

    async def _wait_confirmed(self) -> None:
        """Every release handed to the producer is acknowledged and marked."""
        await asyncio.gather(*list(self._confirms), return_exceptions=True)
