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
import time
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from prometheus_client import Counter as MetricCounter
from psycopg import AsyncConnection

from services.status.domain import derive_status
from services.status.settings import StatusSettings
from shared.consumer import Batch, ConsumerLoop
from shared.db import columns, transaction
from shared.events import (
    ImageFailed,
    ImageSucceeded,
    JobCancelled,
    JobCommandRefused,
    JobReleased,
    JobRescheduled,
    JobStatusChanged,
    JobSubmitted,
    encode_event,
)
from shared.metrics import STAGE
from shared.runtime import Runtime, exit_if_it_dies, retry_forever

log = logging.getLogger(__name__)
CONSUMER = "status"
JOBS_FINISHED = MetricCounter("imagejobs_status_jobs_finished_total", "Jobs reaching a final status", ["status"])
FINAL = ("completed", "failed", "cancelled")


class Projector(ConsumerRebalanceListener):
    def __init__(self, settings: StatusSettings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        topics = settings.topics
        # offsets are stored with the view (by_handler), never committed to Kafka
        self.loop = ConsumerLoop(settings, runtime, CONSUMER, [topics.jobs, topics.results], self._fold,
                                 commit="by_handler", listener=self, max_records=5000, timeout_ms=200)
        self._tasks: list[asyncio.Task[None]] = []
        self._relay_wakeup = asyncio.Event()

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self.loop.run()), asyncio.create_task(self._relay())]
        exit_if_it_dies(self._tasks[0], "the status fold")
        exit_if_it_dies(self._tasks[1], "the status relay")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.loop.close()

    async def _fold(self, batch: Batch) -> None:
        """The batch folded into the view, with the offsets it came from, in one transaction."""
        offsets = [(tp.topic, tp.partition, offset) for tp, offset in batch.next_offsets().items()]
        events = batch.events
        await retry_forever("folding events", lambda: self._apply(events, offsets))
        self._observe_folded(batch)
        self._relay_wakeup.set()

    def _observe_folded(self, batch: Batch) -> None:
        """recorded -> folded, per outcome: now minus the outcome record's timestamp."""
        now_ms = time.time() * 1000
        results = self.settings.topics.results
        for delivery in batch.deliveries:
            if delivery.tp.topic == results:
                STAGE["folded"].observe(max(0.0, now_ms - delivery.timestamp_ms) / 1000)

    async def _apply(self, events: list[Any], offsets: list[tuple[str, int, int]]) -> None:
        """One transaction: the events folded into the view, and the offsets they came from."""
        async with transaction(self.runtime.pool) as conn:
            touched = await apply_events(conn, events)
            await conn.execute(
                "INSERT INTO consumer_offsets (consumer, topic, partition, next_offset)"
                " SELECT %s, t, p, o FROM unnest(%s::text[], %s::int[], %s::bigint[]) AS u(t, p, o)"
                " ON CONFLICT (consumer, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset",
                (CONSUMER, *columns(offsets)))
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
        consumer = self.loop.consumer
        assert consumer is not None
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)

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
        async with transaction(self.runtime.pool) as conn:
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
            await conn.execute(
                "UPDATE status_jobs AS s SET emitted_status = u.status"
                " FROM unnest(%s::uuid[], %s::text[]) AS u(job_id, status) WHERE s.job_id = u.job_id",
                columns((j, status) for j, status, *_ in rows))
        for _, status, *_ in rows:
            if status in FINAL:
                JOBS_FINISHED.labels(status).inc()


async def apply_events(conn: AsyncConnection[Any], events: list[Any]) -> set[Any]:
    """Apply a batch of events to the view in a few statements (idempotent, order-independent:
    flags are set, outcomes are unique by task_id and counters move only for new outcomes);
    returns the jobs whose status may have changed."""
    submitted: dict[Any, JobSubmitted] = {}
    flags: dict[str, set[Any]] = {"released": set(), "cancelled": set()}
    outcomes: dict[str, ImageSucceeded | ImageFailed] = {}
    moved: dict[Any, Any] = {}  # job_id -> its latest rescheduled time in the batch
    decisions: dict[Any, tuple[Any, bool, str]] = {}  # command_id -> (job_id, accepted, state)
    for event in events:
        if isinstance(event, JobSubmitted):
            submitted.setdefault(event.job_id, event)  # a re-published submit is the same job
        elif isinstance(event, JobReleased):
            flags["released"].add(event.job_id)
        elif isinstance(event, JobCancelled):
            flags["cancelled"].add(event.job_id)
            if event.command_id is not None:
                decisions.setdefault(event.command_id, (event.job_id, True, "cancelled"))
        elif isinstance(event, JobRescheduled):
            moved[event.job_id] = event.scheduled_time
            decisions.setdefault(event.command_id, (event.job_id, True, "pending"))
        elif isinstance(event, JobCommandRefused):
            decisions.setdefault(event.command_id, (event.job_id, False, event.state))
        elif isinstance(event, ImageSucceeded | ImageFailed):
            outcomes.setdefault(event.task_id, event)
    async with conn.cursor() as cur:
        if submitted:
            await cur.execute(UPSERT_SUBMITTED, columns(
                (e.job_id, e.owner, e.scheduled_time, e.total_images) for e in submitted.values()))
        for column, job_ids in flags.items():
            if job_ids:
                await cur.execute(
                    f"INSERT INTO status_jobs (job_id, {column}) SELECT j, true FROM unnest(%s::uuid[]) AS u(j)"
                    f" ON CONFLICT (job_id) DO UPDATE SET {column} = true", (list(job_ids),))
        if outcomes:
            await cur.execute(INSERT_OUTCOMES, columns(_outcome_row(e) for e in outcomes.values()))
        if moved:
            await cur.execute(
                "UPDATE status_jobs AS s SET scheduled_time = u.t, updated_at = now()"
                " FROM unnest(%s::uuid[], %s::timestamptz[]) AS u(j, t) WHERE s.job_id = u.j", columns(moved.items()))
        if decisions:  # in the same transaction as the view they change: answered means readable
            await cur.execute(
                "INSERT INTO status_commands (command_id, job_id, accepted, state)"
                " SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::boolean[], %s::text[])"
                " ON CONFLICT (command_id) DO NOTHING", columns((c, *d) for c, d in decisions.items()))
    return set(submitted) | flags["released"] | flags["cancelled"] | {e.job_id for e in outcomes.values()}


UPSERT_SUBMITTED = (
    "INSERT INTO status_jobs (job_id, submitted, owner, scheduled_time, total_images)"
    " SELECT j, true, o, t, n FROM unnest(%s::uuid[], %s::text[], %s::timestamptz[], %s::int[]) AS u(j, o, t, n)"
    " ON CONFLICT (job_id) DO UPDATE SET submitted = true, owner = EXCLUDED.owner,"
    # a submit re-published by an Idempotency-Key retry must not undo a reschedule
    " scheduled_time = CASE WHEN status_jobs.submitted THEN status_jobs.scheduled_time"
    " ELSE EXCLUDED.scheduled_time END, total_images = EXCLUDED.total_images")
# New outcome rows only (a repeat conflicts and is skipped), then the job's counters move by
# exactly the rows inserted.
INSERT_OUTCOMES = (
    "WITH ins AS (INSERT INTO status_outcomes (task_id, job_id, visit_index, image_index, store_id,"
    " image_url, ok, width, height, perimeter, error)"
    " SELECT * FROM unnest(%s::text[], %s::uuid[], %s::int[], %s::int[], %s::text[], %s::text[],"
    " %s::boolean[], %s::int[], %s::int[], %s::int[], %s::text[])"
    " ON CONFLICT (task_id) DO NOTHING RETURNING job_id, ok)"
    " INSERT INTO status_jobs (job_id, succeeded, failed)"
    " SELECT job_id, count(*) FILTER (WHERE ok), count(*) FILTER (WHERE NOT ok) FROM ins GROUP BY job_id"
    " ON CONFLICT (job_id) DO UPDATE SET succeeded = status_jobs.succeeded + EXCLUDED.succeeded,"
    " failed = status_jobs.failed + EXCLUDED.failed")


def _outcome_row(e: ImageSucceeded | ImageFailed) -> tuple[Any, ...]:
    ok = isinstance(e, ImageSucceeded)
    return (e.task_id, e.job_id, e.visit_index, e.image_index, e.store_id, e.image_url, ok,
            getattr(e, "width", None), getattr(e, "height", None), getattr(e, "perimeter", None),
            None if ok else e.reason)  # type: ignore[union-attr]


async def refresh_status(conn: AsyncConnection[Any], job_ids: set[Any]) -> None:
    """Recompute the status of `job_ids` from their counters (rows locked in a fixed order, so a
    second status instance folding the same jobs waits instead of writing a stale status)."""
    if not job_ids:
        return
    rows = await (await conn.execute(
        "SELECT job_id, total_images, released, cancelled, succeeded, failed, status"
        " FROM status_jobs WHERE job_id = ANY(%s) ORDER BY job_id FOR UPDATE", (list(job_ids),))).fetchall()
    updates = []
    for job_id, total, released, cancelled, succeeded, failed, current in rows:
        status = derive_status(total=total, released=released, cancelled=cancelled,
                               succeeded=succeeded, failed=failed)
        if status != current:
            updates.append((job_id, status))
    if updates:
        await conn.execute(
            "UPDATE status_jobs AS s SET status = u.status, updated_at = now()"
            " FROM unnest(%s::uuid[], %s::text[]) AS u(job_id, status) WHERE s.job_id = u.job_id",
            columns(updates))
