"""The processor's consumer loop: many tasks at once (bounded), offsets committed only up to
the lowest task still in flight, after its result row and outcome event are durable.

Each fetched batch is decoded at once and checked against the result rows with one query
(a redelivered task is not downloaded again: its recorded outcome is re-published). A task
holds one of `PROCESSOR_CONCURRENCY` download slots while it downloads and measures, then one
of `PROCESSOR_CONCURRENCY` GPU slots for its simulated GPU time: the next images are fetched
while the GPU slots are busy, so a GPU slot never waits on the network. Recording and
publishing happen in batches (results.py) without a slot.

On rebalance or SIGTERM it stops fetching, lets in-flight tasks finish (bounded), commits,
and only then gives partitions up, so nothing is lost and nothing is processed twice in
effect (a task that did run twice finds its result row and re-emits the same outcome).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from services.processor.adapters.cache import DimensionCache
from services.processor.adapters.fetch import Fetcher, FetchLimits
from services.processor.adapters.results import Recorder, recorded_outcomes
from services.processor.adapters.stores import StoreDirectory
from services.processor.domain import OffsetTracker, parse_gpu_delay
from services.processor.handlers.process import OUTCOMES, Deps, Outcome, process
from services.processor.settings import ProcessorSettings
from shared.consumer import Batch, ConsumerLoop, Delivery
from shared.events import ImageSucceeded, ImageTask
from shared.metrics import STAGE
from shared.runtime import Runtime, exit_if_it_dies, retry_forever

log = logging.getLogger(__name__)
DRAIN_TIMEOUT_S = 30.0
BACKLOG_FACTOR = 8
SUCCEEDED, FAILED = OUTCOMES.labels("succeeded"), OUTCOMES.labels("failed")


class ProcessorWorker(ConsumerRebalanceListener):
    def __init__(self, settings: ProcessorSettings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        s = settings
        self.fetcher = Fetcher(FetchLimits(
            s.image_max_bytes, s.image_connect_timeout_s, s.image_total_timeout_s,
            s.image_max_redirects, s.image_attempts, s.image_retry_base_s,
            s.image_allow_private_networks))
        self.deps = Deps(runtime, self.fetcher, DimensionCache(s.image_cache_ttl_s, s.image_cache_size),
                         StoreDirectory(runtime), parse_gpu_delay(s.processor_gpu_delay_ms),
                         s.image_max_pixels, random.Random(), asyncio.Semaphore(s.processor_concurrency))
        self.recorder = Recorder(runtime, settings.topics.results, busy_gather_s=s.busy_batch_wait_ms / 1000)
        self.tracker = OffsetTracker()
        self.slots = asyncio.Semaphore(s.processor_concurrency)  # downloading and measuring
        # tasks between fetch and commit, recording included: bounds memory when recording stalls
        self.backlog = asyncio.Semaphore(s.processor_concurrency * BACKLOG_FACTOR)
        # offsets: committed by the handler, below the lowest task still in flight
        self.loop = ConsumerLoop(settings, runtime, "processor", [settings.topics.tasks], self._dispatch_batch,
                                 commit="by_handler", listener=self, accept=(ImageTask,),
                                 max_records=s.processor_concurrency * 2, timeout_ms=200)
        self._inflight: set[asyncio.Task[None]] = set()
        self._main: asyncio.Task[None] | None = None
        self._committer: asyncio.Task[None] | None = None
        runtime.add_check("store_master", self.deps.stores.loaded)

    @property
    def consumer(self) -> AIOKafkaConsumer | None:
        return self.loop.consumer

    def details(self) -> dict[str, object]:
        """For /readyz: the partitions this instance owns and the tasks it has in flight."""
        return {"assigned_partitions": sorted(tp.partition for tp in self.loop.owned()),
                "in_flight": self.tracker.in_flight()}

    async def start(self) -> None:
        await self.fetcher.start()
        self.recorder.start()
        self._main = asyncio.create_task(self.loop.run())
        exit_if_it_dies(self._main, "the processor's consumer loop")
        self._committer = asyncio.create_task(self._commit_periodically())
        exit_if_it_dies(self._committer, "the processor's committer")

    async def stop(self) -> None:
        """Graceful: stop fetching, finish in-flight tasks, commit, leave the group."""
        for task in (self._main, self._committer):
            if task:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._drain(None)
        if self.consumer:
            await self._commit()
        await self.loop.close()
        await self.recorder.stop()
        await self.fetcher.close()

    async def _dispatch_batch(self, batch: Batch) -> None:
        by_partition: dict[TopicPartition, list[Delivery]] = {}
        for delivery in batch.deliveries:
            by_partition.setdefault(delivery.tp, []).append(delivery)
        for tp, deliveries in by_partition.items():
            await self._dispatch(tp, deliveries)

    async def _dispatch(self, tp: TopicPartition, deliveries: list[Delivery]) -> None:
        """Start a task per record as slots free up; stop if the partition is revoked meanwhile."""
        tasks = [d.event for d in deliveries if d.event is not None]
        known = await retry_forever("looking up recorded results", lambda: recorded_outcomes(self.runtime, tasks))
        assert self.consumer is not None
        for delivery in deliveries:
            task = delivery.event
            if task is None:  # poison, already dead-lettered: its offset may go
                self.tracker.started(tp, delivery.offset)
                self.tracker.finished(tp, delivery.offset)
                continue
            await self.backlog.acquire()
            await self.slots.acquire()
            if tp not in self.consumer.assignment():  # revoked while we waited for a slot
                self.slots.release()
                self.backlog.release()
                return
            self.tracker.started(tp, delivery.offset)
            STAGE["started"].observe(max(0.0, time.time() - delivery.timestamp_ms / 1000))
            job = asyncio.create_task(self._handle(tp, delivery.offset, task, known.get(task.task_id)))
            self._inflight.add(job)
            job.add_done_callback(self._inflight.discard)

    async def _handle(self, tp: TopicPartition, offset: int, task: ImageTask, known: Outcome | None) -> None:
        """Process (holding a download slot until measured), then record and publish (without
        one), then let the offset go."""
        holding = True

        def free_slot() -> None:
            nonlocal holding
            if holding:
                holding = False
                self.slots.release()
        try:
            try:
                outcome, downloaded_at = (known, time.time()) if known else await retry_forever(
                    "processing a task", lambda: process(task, self.deps, free_slot))
            finally:
                free_slot()
            recorded = await retry_forever("recording a result", lambda: self.recorder.record(outcome))
            STAGE["recorded"].observe(time.time() - downloaded_at)
            (SUCCEEDED if isinstance(recorded, ImageSucceeded) else FAILED).inc()
            self.tracker.finished(tp, offset)
        finally:
            self.backlog.release()

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            await self._commit()

    async def _commit(self) -> None:
        offsets = self.tracker.committable()
        if not offsets or self.consumer is None:
            return
        assigned = self.consumer.assignment()
        offsets = {tp: off for tp, off in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - retried on the next tick; work is idempotent
            log.warning("offset commit failed (%s); will retry", exc)

    async def _drain(self, partitions: set[TopicPartition] | None) -> None:
        deadline = asyncio.get_running_loop().time() + DRAIN_TIMEOUT_S
        while self.tracker.in_flight(partitions) and asyncio.get_running_loop().time() < deadline:  # type: ignore[arg-type]
            await asyncio.sleep(0.05)

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if not revoked:
            return
        await self._drain(set(revoked))
        await self._commit()
        self.tracker.forget(set(revoked))  # type: ignore[arg-type]

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("processing partitions %s", sorted(tp.partition for tp in assigned))

