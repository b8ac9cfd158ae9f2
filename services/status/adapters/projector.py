"""Folds the jobs and results topics into the status view (view.py): the edge where Kafka
meets PostgreSQL, so it lives with the adapters; its rules are domain.effects_of and
domain.derive_status.

Each batch is folded in one transaction together with the consumed offsets, and on assignment
the consumer seeks to those stored offsets: the view and its position never disagree, so
redelivery cannot double-count and a dropped view is rebuilt by replaying from the start.
Status transitions are published as `JobStatusChanged` by an outbox relay: rows whose
`status` differs from `emitted_status` are sent, then marked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from uuid import UUID

from aiokafka import ConsumerRebalanceListener, TopicPartition
from prometheus_client import Counter

from services.status.adapters import view
from services.status.domain import FoldCoverage, jobs_touched, unstorable
from services.status.settings import StatusSettings
from shared.consumer import Batch, ConsumerLoop
from shared.db import transaction
from shared.events import FINAL_STATUSES, ImageFailed, ImageSucceeded, JobStatusChanged, encode_event
from shared.metrics import STAGE
from shared.retry import PermanentFailure, retry_record_work
from shared.runtime import Runtime, exit_if_it_dies, retry_in_listener
from shared.waits import woken_within

log = logging.getLogger(__name__)
RELAY_PUBLISH_S = 30.0  # one round of the outbox relay, row locks held (see _publish_transitions)
JOBS_FINISHED = Counter("imagejobs_status_jobs_finished_total", "Jobs reaching a final status", ["status"])


class Projector(ConsumerRebalanceListener):
    def __init__(self, settings: StatusSettings, runtime: Runtime,
                 webhooks_due: Callable[[], None] = lambda: None,
                 jobs_folded: Callable[[set[UUID]], None] = lambda _: None,
                 jobs_folding: Callable[[set[UUID]], None] = lambda _: None,
                 coverage: FoldCoverage | None = None, fold_moved: Callable[[], None] = lambda: None) -> None:
        self.settings = settings
        self.runtime = runtime
        # called when a fold made webhook deliveries (handlers/webhooks.py), so they go out now
        self._webhooks_due = webhooks_due
        # told the jobs each fold may change, before its transaction (`jobs_folding`: the read
        # cache stops answering them from memory) and after it (`jobs_folded`: their streams
        # move now, their cached statuses are read again); see `announced`
        self._jobs_folded = jobs_folded
        self._jobs_folding = jobs_folding
        # whether this fold holds every partition (domain.FoldCoverage), and who to tell when
        # its partitions moved (what they cached may have been changed by another instance)
        self.coverage = coverage or FoldCoverage()
        self._fold_moved = fold_moved
        topics = settings.topics
        # offsets are stored with the view (by_handler), never committed to Kafka
        self.loop = ConsumerLoop(settings, runtime, view.CONSUMER, [topics.jobs, topics.results], self._fold,
                                 commit="by_handler", listener=self, max_records=5000, timeout_ms=200,
                                 refused=self._refused)
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

        async def apply() -> int:
            async with transaction(self.runtime.pool) as conn:
                webhooks = await view.fold(conn, events)
                await view.store_offsets(conn, offsets)
            return webhooks
        touched = jobs_touched(events)
        with self.announced(touched):
            if await retry_record_work("folding events", apply):
                self._webhooks_due()
        self._observe_folded(batch)
        self._relay_wakeup.set()

    async def _refused(self, event: object, reason: str) -> None:
        """An outcome the view cannot store (dead-lettered) still ends its image: folded as a
        failure saying so, so its job becomes final instead of `ongoing` for ever."""
        if not isinstance(event, ImageSucceeded | ImageFailed):
            return
        try:
            substitute = unstorable(event, reason)
        except ValueError as exc:  # its identity itself is what was refused: nothing to fold
            log.error("outcome %s was dead-lettered and cannot be folded as a failure: %s", event.task_id, exc)
            return

        async def apply() -> None:
            async with transaction(self.runtime.pool) as conn:
                await view.fold(conn, [substitute])
        try:
            with self.announced({substitute.job_id}):
                await retry_record_work("folding a substitute failure", apply)
        except PermanentFailure as failure:
            log.error("outcome %s could not be folded even as a failure: %s", event.task_id, failure)

    @contextlib.contextmanager
    def announced(self, job_ids: set[UUID]) -> Iterator[None]:
        """Tell the followers (the read cache, the progress streams) which jobs a fold may change
        before its transaction, and that it is over after it, committed or not: a read between
        the commit and this coroutine resuming must not answer from memory."""
        self._jobs_folding(job_ids)
        try:
            yield
        finally:
            self._jobs_folded(job_ids)

    def _observe_folded(self, batch: Batch) -> None:
        """recorded -> folded, per outcome: now minus the outcome record's timestamp."""
        now_ms = time.time() * 1000
        results = self.settings.topics.results
        for delivery in batch.deliveries:
            if delivery.tp.topic == results:
                STAGE["folded"].observe(max(0.0, now_ms - delivery.timestamp_ms) / 1000)

    # -- assignment: resume from the offsets stored with the view --------------------------
    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.coverage.complete = False
        self._fold_moved()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        async def load() -> dict[tuple[str, int], int]:
            async with self.runtime.pool.connection() as conn:
                return await view.stored_offsets(conn)
        stored = await retry_in_listener("loading stored offsets", load)
        consumer = self.loop.consumer
        assert consumer is not None
        unseen = []
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                unseen.append(tp)
            else:
                consumer.seek(tp, offset)
        if unseen:  # one reset for all: each call may wait a request timeout, and no heartbeat goes meanwhile
            await consumer.seek_to_beginning(*unseen)
        self.coverage.complete = holds_every_partition(consumer, assigned, self.loop.topics)
        self._fold_moved()

    # -- outbox relay: publish status transitions ------------------------------------------
    async def _relay(self) -> None:
        await self.runtime.connected.wait()
        while True:
            await woken_within(self._relay_wakeup, 1.0)
            self._relay_wakeup.clear()
            try:
                await self._publish_transitions()
            except Exception as exc:  # noqa: BLE001 - retried on the next tick
                log.warning("status relay failed (%s: %s); retrying", type(exc).__name__, exc)

    async def _publish_transitions(self) -> None:
        """Publish and mark in one transaction, rows locked: with several status instances,
        one job's transitions are never published out of order. Bounded: the fold updates the
        same rows, so a publish that never ends (the idempotent producer retries a retriable
        error for ever) must not hold their locks for ever; the rows are published again later."""
        async with asyncio.timeout(RELAY_PUBLISH_S), transaction(self.runtime.pool) as conn:
            rows = await view.unemitted(conn)
            if not rows:
                return
            sends = [await self.runtime.producer.send(
                self.settings.topics.status,
                encode_event(JobStatusChanged(job_id=j, status=s, total=t, succeeded=ok, failed=bad)),
                key=str(j).encode()) for j, s, t, ok, bad in rows]
            await asyncio.gather(*sends)
            await view.mark_emitted(conn, [(j, status) for j, status, *_ in rows])
        for _, status, *_ in rows:
            if status in FINAL_STATUSES:
                JOBS_FINISHED.labels(status).inc()


def holds_every_partition(consumer: Any, assigned: Iterable[TopicPartition], topics: Iterable[str]) -> bool:
    """Whether `assigned` is every partition the cluster has of each of `topics` (False while a
    topic's partitions are not known yet)."""
    held: dict[str, set[int]] = {}
    for tp in assigned:
        held.setdefault(tp.topic, set()).add(tp.partition)
    for topic in topics:
        every = consumer.partitions_for_topic(topic)
        if not every or held.get(topic, set()) != set(every):
            return False
    return True
