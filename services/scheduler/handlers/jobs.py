"""The scheduler's consumer of the jobs topic: each batch's `JobSubmitted` go into the durable
schedule (one transaction; ON CONFLICT DO NOTHING) and onto the timer, then its cancel and
reschedule commands are decided by this instance, the job's release owner (see
adapters/commands.py); the consumer loop commits the offsets only after both, so a submitted
job or a command is never lost.

Several instances may run: each owns the partitions Kafka assigns it and releases (and
decides for) only the jobs of those partitions.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from uuid import UUID

from aiokafka import ConsumerRebalanceListener, TopicPartition
from prometheus_client import Counter

from services.scheduler.adapters.commands import record_decisions
from services.scheduler.adapters.completions import CompletionWatcher
from services.scheduler.adapters.store import store_submitted
from services.scheduler.domain import Command, Decision, decision_event, unschedulable
from services.scheduler.handlers.dispatch import Acks, Dispatcher, wait_or_resend
from services.scheduler.handlers.release import Releaser, Submitted
from services.scheduler.settings import SchedulerSettings
from shared.consumer import Batch, ConsumerLoop
from shared.events import JobCancelRequested, JobRescheduleRequested, JobSubmitted, JobWithdrawn, encode_event
from shared.retry import retry_record_work
from shared.runtime import Runtime, exit_if_it_dies, retry_forever

Commands = list[tuple[int, Command]]  # (partition, command)
# what this service itself publishes on the jobs topic: read back, it would only be decoded and dropped
OWN_OUTPUT = ("JobReleased", "TasksDispatched", "JobCancelled", "JobRescheduled", "JobCommandRefused", "JobWithdrawn")
log = logging.getLogger(__name__)
COMMANDS = Counter("imagejobs_scheduler_commands_total", "Cancel and reschedule commands decided",
                   ["command", "decision"])


class SchedulerWorker(ConsumerRebalanceListener):
    def __init__(self, settings: SchedulerSettings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.completions = CompletionWatcher(settings, runtime, lambda offsets: self.dispatcher.processed(offsets),
                                             lambda: self.dispatcher.busy())
        self.dispatcher = Dispatcher(settings, runtime, self._owned_share, self.completions.watching)
        self.releaser = Releaser(settings, runtime, self.dispatcher)
        self.loop = ConsumerLoop(settings, runtime, "scheduler", [settings.topics.jobs], self._on_batch,
                                 commit="after_batch", listener=self, max_records=2000, timeout_ms=500,
                                 refused=self._refused, skip=OWN_OUTPUT)
        self._tasks: list[asyncio.Task[None]] = []

    def details(self) -> dict[str, object]:
        """For /readyz: the partitions this instance owns and the jobs it holds."""
        return {"assigned_partitions": sorted(tp.partition for tp in self.loop.owned()),
                "pending_jobs": len(self.releaser.schedule), **self.dispatcher.details()}

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self.loop.run()), asyncio.create_task(self.releaser.run()),
                       asyncio.create_task(self.releaser.read_ahead()), asyncio.create_task(self.dispatcher.run()),
                       asyncio.create_task(self.completions.run())]
        whats = ("consumer loop", "release loop", "read-ahead", "dispatcher", "completion watcher")
        for task, what in zip(self._tasks, whats, strict=True):
            exit_if_it_dies(task, f"the scheduler's {what}")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.releaser.wait_confirmed()  # releases handed to the producer get marked (bounded by the caller)
        await self.dispatcher.store_cursors()  # and dispatched tasks' cursors stored
        await self.loop.close()

    def _owned(self) -> set[int]:
        return {tp.partition for tp in self.loop.owned()}

    def _owned_share(self) -> float:
        """The part of the jobs topic this instance owns: its part of the dispatch window."""
        consumer = self.loop.consumer
        total = len(consumer.partitions_for_topic(self.settings.topics.jobs) or ()) if consumer else 0
        return len(self._owned()) / total if total else 0.0

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
            stored = await retry_record_work("storing submitted jobs",
                                             lambda: store_submitted(self.runtime.pool, submitted))
            self.releaser.add_submitted(stored.to_hold(submitted), self._owned())
            if stored.withdrawn:
                await self._announce_withdrawn(stored.withdrawn)
        if commands:
            await self._decide(commands)

    async def _decide(self, commands: Commands) -> None:
        """Decide, apply to the timer and hand the decisions to the producer under the release
        lock (so they are ordered after any release that popped the job first), then wait for
        their acknowledgement before the offsets are committed."""
        async with self.releaser.lock:
            decided = await retry_record_work("deciding commands", lambda: record_decisions(
                self.runtime.pool, [c for _, c in commands], self.releaser.holds))
            partition_of: dict[UUID, int] = {c.job_id: p for p, c in commands}
            self.releaser.apply_decisions([d for d, new in decided if new], partition_of, self._owned())
            decisions = [d for d, _ in decided]
            acks = await self._send_decisions(decisions)
        await retry_record_work("publishing decisions", lambda: wait_or_resend(
            acks, lambda: self._send_decisions(decisions)))
        for decision in decisions:
            COMMANDS.labels(decision.command, "accepted" if decision.accepted else "refused").inc()

    async def _send_decisions(self, decisions: list[Decision]) -> Acks:
        topic, producer = self.settings.topics.jobs, self.runtime.producer
        return [await producer.send(topic, encode_event(decision_event(d)), key=str(d.job_id).encode())
                for d in decisions]

    async def _announce_withdrawn(self, job_ids: set[UUID]) -> None:
        """Jobs ingest withdrew before they arrived: the status view hides them."""
        events = [JobWithdrawn(job_id=job_id) for job_id in sorted(job_ids)]
        topic, producer = self.settings.topics.jobs, self.runtime.producer
        acks = await send_all(producer, topic, events)
        await retry_record_work("announcing withdrawn jobs", lambda: wait_or_resend(
            acks, lambda: send_all(producer, topic, events)))

    async def _refused(self, event: object, reason: str) -> None:
        """A job the schedule cannot hold (dead-lettered) still ends: each of its images fails
        with the reason, so its status becomes `failed` instead of `scheduled` for ever."""
        if not isinstance(event, JobSubmitted):
            return
        try:
            outcomes = unschedulable(event, reason)
        except ValueError as exc:  # its own fields are what was refused: nothing to say it with
            log.error("job %s was dead-lettered and cannot be failed image by image: %s", event.job_id, exc)
            return
        topic, producer = self.settings.topics.results, self.runtime.producer
        acks = await send_all(producer, topic, outcomes)
        await retry_record_work("failing an unschedulable job", lambda: wait_or_resend(
            acks, lambda: send_all(producer, topic, outcomes)))

    # -- rebalance: the timer follows the partitions owned ---------------------------------
    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.releaser.forget({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        partitions = [tp.partition for tp in assigned]
        await retry_forever("loading pending jobs", lambda: self.releaser.load(partitions))


async def send_all(producer: Any, topic: str, events: list[Any]) -> Acks:
    """Hand every event to the producer, keyed by its job; returns the acknowledgements."""
    return [await producer.send(topic, encode_event(e), key=str(e.job_id).encode()) for e in events]
