"""The scheduler's composition root: builds the adapters on the service's runtime (its Kafka
producer and PostgreSQL pool) and hands them to the use cases as their ports. The only module
that imports both adapters and handlers; app.py serves what `build` returns.

    ConsumerLoop(jobs topic) ─> TakeJobs ─> Releaser ─> Dispatcher
                                  │            │            │
                      SubmittedJobs, Publisher │   DispatchStore, TaskSender
                                  ReleaseStore, Publisher, CommandLedger
    CompletionWatcher (processors' committed offsets) ─> Dispatcher.processed

The worker below runs them, and follows the partitions Kafka assigns this instance: the timer
loads the pending jobs of a partition assigned, and forgets those of one revoked.
"""

from __future__ import annotations

import asyncio

from aiokafka import ConsumerRebalanceListener, TopicPartition

from services.scheduler.adapters.commands import CommandLedger
from services.scheduler.adapters.completions import CompletionWatcher
from services.scheduler.adapters.kafka import KafkaPublisher, KafkaTaskSender
from services.scheduler.adapters.store import ScheduleTable, expire_finished
from services.scheduler.handlers.dispatch import Dispatcher
from services.scheduler.handlers.jobs import OWN_OUTPUT, TakeJobs
from services.scheduler.handlers.release import Releaser
from services.scheduler.settings import SchedulerSettings
from shared.consumer import ConsumerLoop
from shared.retention import Expiry
from shared.runtime import Runtime, exit_if_it_dies, retry_in_listener


class SchedulerWorker(ConsumerRebalanceListener):
    def __init__(self, settings: SchedulerSettings, runtime: Runtime) -> None:
        self.settings = settings
        table, publisher = ScheduleTable(runtime), KafkaPublisher(runtime, settings.topics)
        self.completions = CompletionWatcher(settings, runtime, lambda offsets: self.dispatcher.processed(offsets),
                                             lambda: self.dispatcher.busy())
        self.dispatcher = Dispatcher(settings, table, KafkaTaskSender(runtime, settings.topics.tasks),
                                     self._owned_share, self.completions.watching)
        self.releaser = Releaser(settings, table, publisher, CommandLedger(runtime, settings.topics.jobs),
                                 self.dispatcher)
        take_jobs = TakeJobs(table, publisher, self.releaser, self._owned)
        self.loop = ConsumerLoop(settings, runtime, "scheduler", [settings.topics.jobs], take_jobs.on_batch,
                                 commit="after_batch", listener=self, max_records=2000, timeout_ms=500,
                                 refused=take_jobs.refused, skip=OWN_OUTPUT)
        self._tasks: list[asyncio.Task[None]] = []

    def details(self) -> dict[str, object]:
        """For /readyz: the partitions this instance owns and the jobs it holds."""
        return {"assigned_partitions": sorted(self._owned()),
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

    # -- rebalance: the timer follows the partitions owned ---------------------------------
    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.releaser.forget({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        partitions = [tp.partition for tp in assigned]
        await retry_in_listener("loading pending jobs", lambda: self.releaser.load(partitions))


def build(settings: SchedulerSettings, runtime: Runtime) -> SchedulerWorker:
    return SchedulerWorker(settings, runtime)


def expiries(settings: SchedulerSettings, runtime: Runtime) -> list[Expiry]:
    """Released and cancelled jobs, kept the slack beyond the view's retention of them."""
    older_than_s = settings.job_retention_s + settings.retention_slack_s
    return [Expiry("scheduler_jobs", lambda batch: expire_finished(runtime.pool, older_than_s, batch))]
