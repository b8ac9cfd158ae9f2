"""The processor's consumer loop: many tasks at once (bounded), offsets committed only up to
the lowest task still in flight, after its result row and outcome event are durable.

Each fetched batch is decoded at once and the records that may be redeliveries (those already
in their partition when this instance was given it: `domain.possibly_processed`) are checked
against the result rows with one query (a redelivered task is not downloaded again: its
recorded outcome is re-published). In steady work no record is, and no query is made: it was
a query per fetched batch, ~180 per 10,000-image burst, that found nothing. A task
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
import time
from collections import Counter
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from prometheus_client import Histogram

from services.processor.domain import OffsetTracker, StartQueue, possibly_processed
from services.processor.handlers.process import OUTCOMES, Deps, failed, process
from services.processor.ports import Edge, ResultRecorder
from services.processor.settings import ProcessorSettings
from shared.consumer import Batch, ConsumerLoop, Delivery
from shared.events import ImageOutcome, ImageSucceeded, ImageTask
from shared.fairness import parse_weights
from shared.metrics import STAGE, tenant_label
from shared.retry import PermanentFailure, retry_record_work
from shared.runtime import Runtime, exit_if_it_dies

log = logging.getLogger(__name__)
DRAIN_TIMEOUT_S = 30.0
END_OFFSETS_TIMEOUT_S = 5.0  # reading assigned partitions' end offsets; past it, every record is looked up
# Offsets are committed this often while they move: the scheduler's dispatch window learns from
# them which tasks are done (services/scheduler/adapters/completions.py), so this bounds how
# long a finished task still holds its place (at 0.2 s, a newcomer tenant's job behind a full
# window waited ~0.3 s longer). A commit is one small request; none is sent while idle.
COMMIT_EVERY_S = 0.05
# Tasks fetched and not yet committed, per slot (recording included): bounds memory when
# recording stalls, and is deep enough that a processor holds its whole share of the scheduler's
# dispatch window (2 x 32 x 64 = 4,096 >= 2,048), so every dispatched task waits in a local fair
# queue, not first-in-first-out in the tasks topic, and a newcomer's task is picked next.
BACKLOG_FACTOR = 64
SUCCEEDED, FAILED = OUTCOMES.labels("succeeded"), OUTCOMES.labels("failed")
TENANT_WAIT = Histogram("imagejobs_tenant_wait_seconds", "From an image's due time to its processing start",
                        ["tenant"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300))


class ProcessorWorker(ConsumerRebalanceListener):
    """The consumer loop's handler; its ports come from bootstrap.build: `deps` for processing a
    task, `recorder` for results, `edges` the adapters opened by start() and closed by stop()."""

    def __init__(self, settings: ProcessorSettings, runtime: Runtime, deps: Deps, recorder: ResultRecorder,
                 edges: Sequence[Edge] = ()) -> None:
        s = settings
        self.deps = deps
        self.recorder = recorder
        self.edges = edges
        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self.slots = asyncio.Semaphore(s.processor_concurrency)  # downloading and measuring
        # tasks between fetch and commit, recording included: bounds memory when recording stalls
        self.backlog = asyncio.Semaphore(s.processor_concurrency * BACKLOG_FACTOR)
        # offsets: committed by the handler, below the lowest task still in flight
        self.loop = ConsumerLoop(settings, runtime, "processor", [settings.topics.tasks], self._dispatch_batch,
                                 commit="by_handler", listener=self, accept=(ImageTask,),
                                 max_records=s.processor_concurrency * 2, timeout_ms=200)
        self._inflight: set[asyncio.Task[None]] = set()
        # fetched tasks waiting for a download slot: (partition, record, outcome already recorded)
        self.waiting: StartQueue[tuple[TopicPartition, Delivery, ImageOutcome | None]] = StartQueue(
            parse_weights(s.tenant_weights))
        self._work = asyncio.Event()
        self._running: Counter[TopicPartition] = Counter()  # started tasks not finished, per partition
        self._committed: dict[TopicPartition, int] = {}  # the offsets last committed
        # each owned partition's end offset when it was assigned (None: unknown): below it, a
        # record may have been processed by the partition's previous owner
        self._end_at_assignment: dict[TopicPartition, int | None] = {}
        self._main: asyncio.Task[None] | None = None
        self._committer: asyncio.Task[None] | None = None
        self._starter: asyncio.Task[None] | None = None

    @property
    def consumer(self) -> AIOKafkaConsumer | None:
        return self.loop.consumer

    def details(self) -> dict[str, object]:
        """For /readyz: the partitions this instance owns and the tasks it has in flight."""
        return {"assigned_partitions": sorted(tp.partition for tp in self.loop.owned()),
                "in_flight": self.tracker.in_flight(), "waiting": len(self.waiting),
                "running": sum(self._running.values())}

    async def start(self) -> None:
        for edge in self.edges:
            await edge.start()
        self._main = asyncio.create_task(self.loop.run())
        exit_if_it_dies(self._main, "the processor's consumer loop")
        self._committer = asyncio.create_task(self._commit_periodically())
        exit_if_it_dies(self._committer, "the processor's committer")
        self._starter = asyncio.create_task(self._start_fairly())
        exit_if_it_dies(self._starter, "the processor's starter")

    async def stop(self) -> None:
        """Graceful: stop fetching, finish in-flight tasks, commit, leave the group."""
        for task in (self._main, self._committer, self._starter):
            if task:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._drain(None)
        if self.consumer:
            await self._commit()
        await self.loop.close()
        for edge in reversed(self.edges):
            await edge.close()

    async def _dispatch_batch(self, batch: Batch) -> None:
        """The batch's already recorded outcomes in one query, then its tasks queued partition
        by partition."""
        tasks = [d.event for d in batch.deliveries if d.event is not None
                 and possibly_processed(d.offset, self._end_at_assignment.get(d.tp))]
        known: dict[str, ImageOutcome] = {}
        if tasks:
            try:
                known = await retry_record_work("looking up recorded results",
                                                lambda: self.recorder.recorded(tasks))
            except PermanentFailure:  # each task then finds its row when it is recorded
                known = {}
        by_partition: dict[TopicPartition, list[Delivery]] = {}
        for delivery in batch.deliveries:
            by_partition.setdefault(delivery.tp, []).append(delivery)
        for tp, deliveries in by_partition.items():
            await self._dispatch(tp, deliveries, known)

    async def _dispatch(self, tp: TopicPartition, deliveries: list[Delivery], known: dict[str, ImageOutcome]) -> None:
        """Queue each record's task (bounded by the backlog); the starter takes them fairly.
        A record counts as in flight from here, so no offset is committed past it."""
        assert self.consumer is not None
        for delivery in deliveries:
            task = delivery.event
            if task is None:  # poison, already dead-lettered: its offset may go
                self.tracker.started(tp, delivery.offset)
                self.tracker.finished(tp, delivery.offset)
                continue
            await self.backlog.acquire()
            if tp not in self.consumer.assignment():  # revoked while we waited for room
                self.backlog.release()
                return
            self.tracker.started(tp, delivery.offset)
            self.waiting.put(task.tenant or "", task.priority, (tp, delivery, known.get(task.task_id)))
            self._work.set()

    async def _start_fairly(self) -> None:
        """Whenever a download slot is free, start the next waiting task: shared fairly between
        tenants (TENANT_WEIGHTS), within a tenant the most urgent first, then in the order
        fetched (domain.StartQueue says why not its jobs in turn)."""
        while True:
            await self.slots.acquire()
            while not len(self.waiting):
                self._work.clear()
                await self._work.wait()
            picked = self.waiting.pop()
            assert picked is not None
            tp, delivery, known = picked
            task: ImageTask = delivery.event
            assert self.consumer is not None
            if tp not in self.consumer.assignment():  # revoked while it waited: its new owner has it
                self.slots.release()
                self.backlog.release()
                continue
            now = time.time()
            STAGE["started"].observe(max(0.0, now - delivery.timestamp_ms / 1000))
            TENANT_WAIT.labels(tenant_label(task.tenant)).observe(max(0.0, now - task.scheduled_time.timestamp()))
            self._running[tp] += 1
            handling = asyncio.create_task(self._handle(tp, delivery, task, known))
            self._inflight.add(handling)
            handling.add_done_callback(self._inflight.discard)

    async def _handle(self, tp: TopicPartition, delivery: Delivery, task: ImageTask,
                      known: ImageOutcome | None) -> None:
        """Process (holding a download slot until measured), then record and publish (without
        one), then let the offset go. Every task ends: an error retrying does not cure fails
        the image with its reason, and a result that cannot be recorded even as a failure
        dead-letters the task."""
        holding = True

        def free_slot() -> None:
            nonlocal holding
            if holding:
                holding = False
                self.slots.release()
        try:
            try:
                outcome, downloaded_at = (known, time.time()) if known else await self._outcome(task, free_slot)
            finally:
                free_slot()
            recorded = await self._record(delivery, task, outcome)
            STAGE["recorded"].observe(time.time() - downloaded_at)
            if recorded is not None:
                (SUCCEEDED if isinstance(recorded, ImageSucceeded) else FAILED).inc()
            self.tracker.finished(tp, delivery.offset)
            self.loop.stall.progressed()
        finally:
            self._running[tp] -= 1
            self.backlog.release()

    async def _outcome(self, task: ImageTask, measured: Callable[[], None]) -> tuple[ImageOutcome, float]:
        try:
            return await retry_record_work("processing a task", lambda: process(task, self.deps, measured))
        except PermanentFailure as failure:
            return failed(task, f"processing error: {type(failure.cause).__name__}"), time.time()

    async def _record(self, delivery: Delivery, task: ImageTask, outcome: ImageOutcome) -> ImageOutcome | None:
        """The outcome recorded; if it cannot be, a failure saying so; if not even that, the task
        goes to the DLQ (None)."""
        try:
            return await retry_record_work("recording a result", lambda: self.recorder.record(outcome))
        except PermanentFailure as failure:
            reason = f"result could not be recorded: {type(failure.cause).__name__}"
        substitute = failed(task, reason)
        try:
            return await retry_record_work("recording a failure", lambda: self.recorder.record(substitute))
        except PermanentFailure as failure:
            await self.loop.dead_letter(delivery.record, f"refused: {failure}")
            return None

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_EVERY_S)
            await self._commit(only_changed=True)

    async def _commit(self, only_changed: bool = False) -> None:
        offsets = self.tracker.committable()
        if not offsets or self.consumer is None:
            return
        assigned = self.consumer.assignment()
        offsets = {tp: off for tp, off in offsets.items() if tp in assigned}
        if not offsets or (only_changed and offsets == self._committed):
            return
        try:
            await self.consumer.commit(offsets)
            self._committed = offsets
        except Exception as exc:  # noqa: BLE001 - retried on the next tick; work is idempotent
            log.warning("offset commit failed (%s); will retry", exc)

    async def _drain(self, partitions: set[TopicPartition] | None) -> None:
        """Let the started tasks of `partitions` (None: all) finish, for at most DRAIN_TIMEOUT_S;
        tasks still waiting to start are left to be delivered again (no offset passes them)."""
        deadline = asyncio.get_running_loop().time() + DRAIN_TIMEOUT_S
        while asyncio.get_running_loop().time() < deadline and any(
                n for tp, n in self._running.items() if partitions is None or tp in partitions):
            await asyncio.sleep(0.05)

    def _unqueue(self, revoked: set[TopicPartition]) -> None:
        """Drop the waiting tasks of revoked partitions (their new owner gets them again)."""
        for _ in range(self.waiting.drop(lambda item: item[0] in revoked)):
            self.backlog.release()

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if not revoked:
            return
        self._unqueue(set(revoked))
        await self._drain(set(revoked))
        await self._commit()
        self.tracker.forget(set(revoked))
        for tp in revoked:
            self._end_at_assignment.pop(tp, None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("processing partitions %s", sorted(tp.partition for tp in assigned))
        ends: dict[TopicPartition, int] = {}
        if assigned and self.consumer is not None:
            try:
                async with asyncio.timeout(END_OFFSETS_TIMEOUT_S):
                    ends = await self.consumer.end_offsets(list(assigned))
            except Exception as exc:  # noqa: BLE001 - unknown: every record of them is looked up
                log.warning("reading the end offsets of partitions %s failed (%s); looking up every task's"
                            " result", sorted(tp.partition for tp in assigned), exc)
        for tp in assigned:
            self._end_at_assignment[tp] = ends.get(tp)

