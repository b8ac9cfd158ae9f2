"""The scheduler's loops: consume `JobSubmitted` into the durable schedule, release due jobs.

Consume: each batch is inserted into `scheduler_jobs` (ON CONFLICT DO NOTHING), then the
offsets are committed, so a submitted job is never lost. Release: a timer sleeps exactly
until the earliest due time (woken early when an earlier job arrives), publishes the job's
tasks and `JobReleased` with acks=all, then marks the rows released. A crash between the
two re-releases the job on restart; tasks keep their `task_id`, so the processors and the
status fold ignore the repeat: nothing fires twice in effect.

Several instances may run: each owns the partitions Kafka assigns it and releases only the
jobs of those partitions.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from uuid import UUID

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from prometheus_client import Counter, Gauge

from services.scheduler.domain import Schedule, released, tasks_for
from services.scheduler.settings import SchedulerSettings
from shared.dlq import send_to_dlq
from shared.events import JobCancelled, JobSubmitted, decode_event, encode_event
from shared.kafka import consumer_options
from shared.metrics import EVENTS_CONSUMED, latency_histogram
from shared.runtime import Runtime, exit_if_it_dies, fetch_batch, retry_forever

log = logging.getLogger(__name__)
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
        if self.consumer:
            await self.consumer.stop()

    async def _run(self) -> None:
        await self.runtime.connected.wait()
        self.consumer = AIOKafkaConsumer(**consumer_options(self.settings, "scheduler"))  # type: ignore[arg-type]
        await retry_forever("starting the scheduler consumer", self.consumer.start)
        self.consumer.subscribe([self.settings.topics.jobs], listener=self)
        self._tasks.append(asyncio.create_task(self._release_loop()))
        exit_if_it_dies(self._tasks[-1], "the scheduler's release loop")
        while True:
            batch = await fetch_batch(self.consumer, "scheduler", timeout_ms=500, max_records=1000)
            for tp, records in batch.items():
                await retry_forever("storing submitted jobs", lambda r=records, p=tp: self._store(p, r))
            if batch:
                await retry_forever("committing offsets", self.consumer.commit)

    async def _store(self, tp: TopicPartition, records: list) -> None:  # type: ignore[type-arg]
        rows, cancels = [], []
        for record in records:
            try:
                event = decode_event(record.value)
            except ValueError as exc:
                await send_to_dlq(self.runtime.producer, self.settings.topics.dlq, "scheduler",
                                  record, f"undecodable: {exc}")
                continue
            EVENTS_CONSUMED.labels("scheduler", event.type).inc()
            if isinstance(event, JobSubmitted):
                rows.append((event.job_id, tp.partition, event.scheduled_time,
                             event.model_dump_json()))
            elif isinstance(event, JobCancelled):
                cancels.append(event.job_id)
        async with self.runtime.pool.connection() as conn:
            async with conn.cursor() as cur:
                if rows:
                    await cur.executemany(
                        "INSERT INTO scheduler_jobs (job_id, partition, due_at, event)"
                        " VALUES (%s, %s, %s, %s) ON CONFLICT (job_id) DO NOTHING", rows)
                if cancels:
                    await cur.execute("UPDATE scheduler_jobs SET state = 'cancelled'"
                                      " WHERE job_id = ANY(%s) AND state = 'pending'", (cancels,))
        if self.consumer is None or tp not in self.consumer.assignment():
            return  # revoked meanwhile: the rows are stored; the new owner loads and releases them
        earliest = self.schedule.next_due_at()
        for job_id, partition, due_at, _ in rows:
            if self.schedule.add(job_id, due_at, partition) and (earliest is None or due_at < earliest):
                self.wakeup.set()
        PENDING.set(len(self.schedule))

    # -- rebalance: load the pending jobs of newly owned partitions -----------------------
    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self._release_lock:  # let an in-flight release finish first
            self.schedule.drop_partitions({tp.partition for tp in revoked})

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
                    await retry_forever("releasing jobs", lambda d=due: self._release(d))
            PENDING.set(len(self.schedule))

    async def _release(self, job_ids: list[UUID]) -> None:
        async with self.runtime.pool.connection() as conn:
            cur = await conn.execute("SELECT event FROM scheduler_jobs WHERE job_id = ANY(%s)"
                                     " AND state = 'pending'", (job_ids,))
            jobs = [JobSubmitted.model_validate(row[0] if isinstance(row[0], dict) else json.loads(row[0]))
                    for row in await cur.fetchall()]
        producer, topics = self.runtime.producer, self.settings.topics
        sends = []
        for job in jobs:
            for task in tasks_for(job):
                sends.append(await producer.send(topics.tasks, encode_event(task), key=task.task_id.encode()))
            sends.append(await producer.send(topics.jobs, encode_event(released(job)),
                                             key=str(job.job_id).encode()))
        await asyncio.gather(*sends)
        now = datetime.now(UTC)
        async with self.runtime.pool.connection() as conn:
            await conn.execute("UPDATE scheduler_jobs SET state = 'released', released_at = %s"
                               " WHERE job_id = ANY(%s) AND state = 'pending'",
                               (now, [j.job_id for j in jobs]))
        for job in jobs:
            LATENESS.observe(max(0.0, (now - job.scheduled_time).total_seconds()))
            TASKS_EMITTED.inc(job.total_images)
        RELEASED.inc(len(jobs))
