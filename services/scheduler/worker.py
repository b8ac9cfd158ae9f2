"""The scheduler's loops: consume `JobSubmitted` into the durable schedule, release due jobs.

Consume: each batch is inserted into `scheduler_jobs` in one transaction (ON CONFLICT DO
NOTHING), then the offsets are committed, so a submitted job is never lost. Release: a timer
sleeps exactly until the earliest due time (woken early when an earlier job arrives) and hands
the job's tasks and `JobReleased` to the idempotent producer (acks=all); a confirmation task
waits for the acknowledgements and only then marks the rows released, while the loop goes on
releasing the next due jobs (so one broker round trip never delays the next release). A crash
before the mark re-releases the job on restart; tasks keep their `task_id`, so the processors
and the status fold ignore the repeat: nothing fires twice in effect. Jobs due within a few
seconds keep their event in memory from the consume loop, so releasing them reads nothing.

Several instances may run: each owns the partitions Kafka assigns it and releases only the
jobs of those partitions.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from prometheus_client import Counter, Gauge

from services.scheduler.domain import Schedule, released, tasks_for
from services.scheduler.settings import SchedulerSettings
from shared.db import columns, transaction
from shared.dlq import send_to_dlq
from shared.events import JobCancelled, JobSubmitted, decode_event, encode_event
from shared.kafka import consumer_options
from shared.metrics import EVENTS_CONSUMED, STAGE, latency_histogram
from shared.runtime import Runtime, exit_if_it_dies, fetch_batch, retry_forever

log = logging.getLogger(__name__)
HOT_HORIZON_S = 5.0
PREFETCH_S = 1.0  # how far ahead of their due time jobs' events are read into memory
PREFETCH_EVERY_S = 0.25
HOT_MAX = 20_000
Submitted = list[tuple[int, JobSubmitted]]  # (partition, event)
MAX_UNCONFIRMED_RELEASES = 16  # release batches handed to the producer, not yet acknowledged
PENDING = Gauge("imagejobs_scheduler_pending_jobs", "Jobs waiting for their time (this instance)")
RELEASED = Counter("imagejobs_scheduler_released_total", "Jobs released")
TASKS_EMITTED = Counter("imagejobs_scheduler_tasks_emitted_total", "Image tasks emitted")
LATENESS = latency_histogram("imagejobs_scheduler_lateness_seconds",
                             "Task emission time minus scheduled_time")


class SchedulerWorker(ConsumerRebalanceListener):
    def __init__(self, settings: SchedulerSettings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.schedule = Schedule()
        self.wakeup = asyncio.Event()
        self.consumer: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._release_lock = asyncio.Lock()
        # JobSubmitted events of jobs due within HOT_HORIZON_S, kept from the consume loop so
        # their release needs no read of the table (bounded: beyond it the table is read).
        self._hot: dict[UUID, tuple[int, JobSubmitted]] = {}
        self._confirms: set[asyncio.Task[None]] = set()
        self._cancelled_while_prefetching: set[UUID] | None = None
        self._confirming = asyncio.Semaphore(MAX_UNCONFIRMED_RELEASES)

    def details(self) -> dict[str, object]:
        """For /readyz: the partitions this instance owns and the jobs it holds."""
        assigned = self.consumer.assignment() if self.consumer else set()
        return {"assigned_partitions": sorted(tp.partition for tp in assigned), "pending_jobs": len(self.schedule)}

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run())]
        exit_if_it_dies(self._tasks[0], "the scheduler's consumer loop")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._wait_confirmed()  # releases handed to the producer get marked (bounded by the caller)
        if self.consumer:
            await self.consumer.stop()

    async def _run(self) -> None:
        await self.runtime.connected.wait()
        self.consumer = AIOKafkaConsumer(**consumer_options(self.settings, "scheduler"))  # type: ignore[arg-type]
        await retry_forever("starting the scheduler consumer", self.consumer.start)
        self.consumer.subscribe([self.settings.topics.jobs], listener=self)
        self._tasks.append(asyncio.create_task(self._release_loop()))
        exit_if_it_dies(self._tasks[-1], "the scheduler's release loop")
        self._tasks.append(asyncio.create_task(self._prefetch_loop()))
        exit_if_it_dies(self._tasks[-1], "the scheduler's read-ahead")
        while True:
            batch = await fetch_batch(self.consumer, "scheduler", timeout_ms=500, max_records=2000)
            if not batch:
                continue
            submitted, cancelled = await self._decode(batch)
            await retry_forever("storing submitted jobs", lambda s=submitted, c=cancelled: self._store(s, c))
            self._schedule(submitted, cancelled)
            await retry_forever("committing offsets", self.consumer.commit)

    async def _decode(self, batch: dict[TopicPartition, list[Any]]) -> tuple[Submitted, list[UUID]]:
        """(partition, JobSubmitted) and cancelled job ids of a batch; poison goes to the DLQ once."""
        submitted: Submitted = []
        cancelled: list[UUID] = []
        for tp, records in batch.items():
            for record in records:
                try:
                    event = decode_event(record.value)
                except ValueError as exc:
                    reason = f"undecodable: {exc}"
                    await retry_forever("dead-lettering a record", lambda r=record, why=reason: send_to_dlq(
                        self.runtime.producer, self.settings.topics.dlq, "scheduler", r, why))
                    continue
                EVENTS_CONSUMED.labels("scheduler", event.type).inc()
                if isinstance(event, JobSubmitted):
                    submitted.append((tp.partition, event))
                elif isinstance(event, JobCancelled):
                    cancelled.append(event.job_id)
        return submitted, cancelled

    async def _store(self, submitted: Submitted, cancelled: list[UUID]) -> None:
        """One transaction: the submitted jobs into the durable schedule, cancellations applied."""
        async with transaction(self.runtime.pool) as conn:
            if submitted:
                await conn.execute(
                    "INSERT INTO scheduler_jobs (job_id, partition, due_at, event)"
                    " SELECT * FROM unnest(%s::uuid[], %s::int[], %s::timestamptz[], %s::jsonb[])"
                    " ON CONFLICT (job_id) DO NOTHING",
                    columns((e.job_id, p, e.scheduled_time, e.model_dump_json()) for p, e in submitted))
            if cancelled:
                await conn.execute("UPDATE scheduler_jobs SET state = 'cancelled'"
                                   " WHERE job_id = ANY(%s) AND state = 'pending'", (cancelled,))

    def _schedule(self, submitted: Submitted, cancelled: list[UUID]) -> None:
        """Add the stored jobs of partitions still owned to the timer (a revoked partition's new
        owner loads them from the table); wake the release loop if one is due earlier."""
        assert self.consumer is not None
        owned = {tp.partition for tp in self.consumer.assignment()}
        earliest = self.schedule.next_due_at()
        horizon = datetime.now(UTC) + timedelta(seconds=HOT_HORIZON_S)
        for partition, event in submitted:
            if partition not in owned or not self.schedule.add(event.job_id, event.scheduled_time, partition):
                continue
            if event.scheduled_time <= horizon and len(self._hot) < HOT_MAX:
                self._hot[event.job_id] = (partition, event)
            if earliest is None or event.scheduled_time < earliest:
                self.wakeup.set()
        for job_id in cancelled:
            self._hot.pop(job_id, None)  # released only through the table, which says cancelled
            if self._cancelled_while_prefetching is not None:
                self._cancelled_while_prefetching.add(job_id)  # a read-ahead in flight must not keep it
        PENDING.set(len(self.schedule))

    # -- rebalance: load the pending jobs of newly owned partitions -----------------------
    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self._release_lock:  # let an in-flight release finish first
            await self._wait_confirmed()
            lost = {tp.partition for tp in revoked}
            self.schedule.drop_partitions(lost)
            self._hot = {j: h for j, h in self._hot.items() if h[0] not in lost}

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        partitions = [tp.partition for tp in assigned]
        await retry_forever("loading pending jobs", lambda: self._load(partitions))
        self.wakeup.set()

    async def _load(self, partitions: list[int]) -> None:
        async with self.runtime.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT job_id, due_at, partition FROM scheduler_jobs"
                " WHERE state = 'pending' AND partition = ANY(%s)", (partitions,))
            async for job_id, due_at, partition in cur:
                self.schedule.add(job_id, due_at, partition)
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
                if due:
                    jobs = await retry_forever("loading due jobs", lambda d=due: self._load_events(d))
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
        self._cancelled_while_prefetching = set()
        try:
            async with self.runtime.pool.connection() as conn:
                rows = await (await conn.execute(
                    "SELECT event::text FROM scheduler_jobs WHERE job_id = ANY(%s) AND state = 'pending'",
                    ([j for j, _ in wanted],))).fetchall()
            partition_of = dict(wanted)
            for start in range(0, len(rows), 100):
                for (raw,) in rows[start:start + 100]:
                    event = JobSubmitted.model_validate_json(raw)
                    # still pending here (not released, revoked or cancelled meanwhile)
                    if event.job_id in self.schedule and event.job_id not in self._cancelled_while_prefetching:
                        self._hot[event.job_id] = (partition_of[event.job_id], event)
                await asyncio.sleep(0)  # parse in slices: a release due now goes first
        finally:
            self._cancelled_while_prefetching = None

    async def _load_events(self, job_ids: list[UUID]) -> list[JobSubmitted]:
        """The due jobs' events: from memory when stored just now, else from the table."""
        hot = [self._hot.pop(j)[1] for j in job_ids if j in self._hot]
        found = {e.job_id for e in hot}
        cold = [j for j in job_ids if j not in found]
        if not cold:
            return hot
        async with self.runtime.pool.connection() as conn:
            cur = await conn.execute("SELECT event::text FROM scheduler_jobs WHERE job_id = ANY(%s)"
                                     " AND state = 'pending'", (cold,))
            rows = await cur.fetchall()
        return hot + [JobSubmitted.model_validate_json(r[0]) for r in rows]

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
            await retry_forever("releasing jobs", lambda: self._wait_acks(jobs, acks))
            job_ids = [j.job_id for j in jobs]
            await retry_forever("marking jobs released", lambda: self._mark_released(job_ids))
            for job in jobs:
                TASKS_EMITTED.inc(job.total_images)
            RELEASED.inc(len(jobs))
        finally:
            self._confirming.release()

    async def _wait_acks(self, jobs: list[JobSubmitted], acks: list[asyncio.Future[object]]) -> None:
        """The acknowledgements; if any failed, the jobs are sent again (same task ids)."""
        try:
            await asyncio.gather(*acks)
        except Exception:
            acks[:] = await self._emit(jobs)
            raise

    async def _mark_released(self, job_ids: list[UUID]) -> None:
        async with self.runtime.pool.connection() as conn:
            await conn.execute("UPDATE scheduler_jobs SET state = 'released', released_at = %s"
                               " WHERE job_id = ANY(%s) AND state = 'pending'", (datetime.now(UTC), job_ids))

    async def _wait_confirmed(self) -> None:
        """Every release handed to the producer is acknowledged and marked."""
        await asyncio.gather(*list(self._confirms), return_exceptions=True)
