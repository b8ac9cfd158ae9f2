"""Folds the jobs and results topics into the `status_jobs` view in PostgreSQL.

Each batch is applied in one transaction together with the consumed offsets
(`consumer_offsets`), and on assignment the consumer seeks to those stored offsets: the view
and its position never disagree, so redelivery cannot double-count and a dropped view is
rebuilt by replaying from the start. Outcomes are unique by `task_id` (repeats change
nothing). Status transitions are published as `JobStatusChanged` by an outbox relay: rows
whose `status` differs from `emitted_status` are sent, then marked.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from prometheus_client import Counter
from psycopg import AsyncConnection

from services.status.domain import derive_status
from services.status.settings import StatusSettings
from shared.dlq import send_to_dlq
from shared.events import (
    ImageFailed,
    ImageSucceeded,
    JobCancelled,
    JobReleased,
    JobStatusChanged,
    JobSubmitted,
    decode_event,
    encode_event,
)
from shared.kafka import consumer_options
from shared.metrics import CONSUMER_LAG, EVENTS_CONSUMED
from shared.runtime import Runtime, exit_if_it_dies, fetch_batch, retry_forever

log = logging.getLogger(__name__)
CONSUMER = "status"
JOBS_FINISHED = Counter("imagejobs_status_jobs_finished_total", "Jobs reaching a final status", ["status"])
FINAL = ("completed", "failed", "cancelled")


class Projector(ConsumerRebalanceListener):
    def __init__(self, settings: StatusSettings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.consumer: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._relay_wakeup = asyncio.Event()
        self.caught_up = False

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._relay())]
        exit_if_it_dies(self._tasks[0], "the status fold")
        exit_if_it_dies(self._tasks[1], "the status relay")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.consumer:
            await self.consumer.stop()

    async def _run(self) -> None:
        await self.runtime.connected.wait()
        topics = self.settings.topics
        self.consumer = AIOKafkaConsumer(**consumer_options(self.settings, "status"))  # type: ignore[arg-type]
        await retry_forever("starting the status consumer", self.consumer.start)
        self.consumer.subscribe([topics.jobs, topics.results], listener=self)
        while True:
            batch = await fetch_batch(self.consumer, "status", timeout_ms=200, max_records=2000)
            if batch:
                await retry_forever("folding events", lambda b=batch: self._apply(b))
                self._relay_wakeup.set()
                self._report_lag(batch)

    def _report_lag(self, batch: dict[TopicPartition, list[Any]]) -> None:
        assert self.consumer is not None
        lag: dict[str, int] = {}
        assigned = self.consumer.assignment()
        for tp, records in batch.items():
            if tp not in assigned:  # revoked while the batch was applied: highwater() would assert
                continue
            end = self.consumer.highwater(tp)
            if end is not None and records:
                lag[tp.topic] = lag.get(tp.topic, 0) + max(0, end - records[-1].offset - 1)
        for topic, value in lag.items():
            CONSUMER_LAG.labels("status", topic).set(value)

    async def _apply(self, batch: dict[TopicPartition, list[Any]]) -> None:
        touched: set[Any] = set()
        async with self.runtime.pool.connection() as conn:
            for tp, records in batch.items():
                for record in records:
                    try:
                        event = decode_event(record.value)
                    except ValueError as exc:
                        await send_to_dlq(self.runtime.producer, self.settings.topics.dlq, "status",
                                          record, f"undecodable: {exc}")
                        continue
                    EVENTS_CONSUMED.labels("status", event.type).inc()
                    if await apply_event(conn, event):
                        touched.add(event.job_id)
                await conn.execute(
                    "INSERT INTO consumer_offsets (consumer, topic, partition, next_offset)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (consumer, topic, partition)"
                    " DO UPDATE SET next_offset = EXCLUDED.next_offset",
                    (CONSUMER, tp.topic, tp.partition, records[-1].offset + 1))
            await refresh_status(conn, touched)

    # -- assignment: resume from the offsets stored with the view --------------------------
    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        stored: dict[tuple[str, int], int] = {}

        async def load() -> None:
            async with self.runtime.pool.connection() as conn:
                rows = await (await conn.execute(
                    "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = %s",
                    (CONSUMER,))).fetchall()
            stored.update({(t, p): o for t, p, o in rows})

        await retry_forever("loading stored offsets", load)
        assert self.consumer is not None
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)

    # -- outbox relay: publish status transitions ------------------------------------------
    async def _relay(self) -> None:
        await self.runtime.connected.wait()
        while True:
            try:
                await asyncio.wait_for(self._relay_wakeup.wait(), 1.0)
            except TimeoutError:
                pass
            self._relay_wakeup.clear()
            try:
                await self._publish_transitions()
            except Exception as exc:  # noqa: BLE001 - retried on the next tick
                log.warning("status relay failed (%s); retrying", exc)

    async def _publish_transitions(self) -> None:
        """Publish and mark in one transaction, rows locked: with several status instances,
        one job's transitions are never published out of order."""
        async with self.runtime.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT job_id, status, total_images, succeeded, failed FROM status_jobs"
                " WHERE emitted_status IS DISTINCT FROM status AND submitted"
                " LIMIT 1000 FOR UPDATE SKIP LOCKED")).fetchall()
            if not rows:
                return
            sends = [await self.runtime.producer.send(
                self.settings.topics.status,
                encode_event(JobStatusChanged(job_id=j, status=s, total=t, succeeded=ok, failed=bad)),
                key=str(j).encode()) for j, s, t, ok, bad in rows]
            await asyncio.gather(*sends)
            async with conn.cursor() as cur:
                await cur.executemany("UPDATE status_jobs SET emitted_status = %s WHERE job_id = %s",
                                      [(s, j) for j, s, *_ in rows])
        for _, status, *_ in rows:
            if status in FINAL:
                JOBS_FINISHED.labels(status).inc()


async def apply_event(conn: AsyncConnection[Any], event: Any) -> bool:
    """Apply one event to the view (idempotent); True if it can change the job's status."""
    if isinstance(event, JobSubmitted):
        await conn.execute(
            "INSERT INTO status_jobs (job_id, submitted, owner, scheduled_time, total_images)"
            " VALUES (%s, true, %s, %s, %s) ON CONFLICT (job_id) DO UPDATE SET submitted = true,"
            " owner = EXCLUDED.owner, scheduled_time = EXCLUDED.scheduled_time,"
            " total_images = EXCLUDED.total_images",
            (event.job_id, event.owner, event.scheduled_time, event.total_images))
        return True
    if isinstance(event, JobReleased | JobCancelled):
        column = "released" if isinstance(event, JobReleased) else "cancelled"
        await conn.execute(
            f"INSERT INTO status_jobs (job_id, {column}) VALUES (%s, true)"
            f" ON CONFLICT (job_id) DO UPDATE SET {column} = true", (event.job_id,))
        return True
    if isinstance(event, ImageSucceeded | ImageFailed):
        ok = isinstance(event, ImageSucceeded)
        await conn.execute(
            "WITH ins AS (INSERT INTO status_outcomes (task_id, job_id, visit_index, image_index,"
            " store_id, image_url, ok, width, height, perimeter, error)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (task_id) DO NOTHING RETURNING ok)"
            " INSERT INTO status_jobs (job_id, succeeded, failed)"
            " SELECT %s, count(*) FILTER (WHERE ok), count(*) FILTER (WHERE NOT ok) FROM ins"
            " HAVING count(*) > 0 ON CONFLICT (job_id) DO UPDATE SET"
            " succeeded = status_jobs.succeeded + EXCLUDED.succeeded,"
            " failed = status_jobs.failed + EXCLUDED.failed",
            (event.task_id, event.job_id, event.visit_index, event.image_index, event.store_id,
             event.image_url, ok, getattr(event, "width", None), getattr(event, "height", None),
             getattr(event, "perimeter", None), None if ok else event.reason, event.job_id))
        return True
    return False


async def refresh_status(conn: AsyncConnection[Any], job_ids: set[Any]) -> None:
    if not job_ids:
        return
    rows = await (await conn.execute(
        "SELECT job_id, total_images, released, cancelled, succeeded, failed, status"
        " FROM status_jobs WHERE job_id = ANY(%s)", (list(job_ids),))).fetchall()
    updates = []
    for job_id, total, released, cancelled, succeeded, failed, current in rows:
        status = derive_status(total=total, released=released, cancelled=cancelled,
                               succeeded=succeeded, failed=failed)
        if status != current:
            updates.append((status, job_id))
    if updates:
        async with conn.cursor() as cur:
            await cur.executemany("UPDATE status_jobs SET status = %s, updated_at = now()"
                                  " WHERE job_id = %s", updates)
