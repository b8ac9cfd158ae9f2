"""The scheduler's use case for the jobs topic: each batch's `JobSubmitted` go into the durable
schedule (one transaction; ON CONFLICT DO NOTHING) and onto the timer, then its cancel and
reschedule commands go to the releaser, which decides them as the job's release owner
(handlers/release.py); the consumer loop (bootstrap.py) commits the offsets only after both,
so a submitted job or a command is never lost.

Several instances may run: each owns the partitions Kafka assigns it and releases (and
decides for) only the jobs of those partitions.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from uuid import UUID

from services.scheduler.domain import unschedulable
from services.scheduler.handlers.dispatch import wait_or_resend
from services.scheduler.handlers.release import Commands, Releaser, Submitted
from services.scheduler.ports import Acks, Publisher, SubmittedJobs
from shared.consumer import Batch
from shared.events import Event, EventUnion, JobCancelRequested, JobRescheduleRequested, JobSubmitted, JobWithdrawn
from shared.retry import retry_record_work

# what this service itself publishes on the jobs topic: read back, it would only be decoded and dropped
OWN_OUTPUT = ("JobReleased", "TasksDispatched", "JobCancelled", "JobRescheduled", "JobCommandRefused", "JobWithdrawn")
log = logging.getLogger(__name__)


class TakeJobs:
    def __init__(self, jobs: SubmittedJobs, publisher: Publisher, releaser: Releaser,
                 owned: Callable[[], set[int]]) -> None:
        """`owned()`: the jobs topic's partitions this instance owns now."""
        self.jobs, self.publisher, self.releaser, self.owned = jobs, publisher, releaser, owned

    async def on_batch(self, batch: Batch) -> None:
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
            stored = await retry_record_work("storing submitted jobs", lambda: self.jobs.store(submitted))
            self.releaser.add_submitted(stored.to_hold(submitted), self.owned())
            if stored.withdrawn:
                await self._announce_withdrawn(stored.withdrawn)
        if commands:
            await self.releaser.decide(commands, self.owned)

    async def _announce_withdrawn(self, job_ids: set[UUID]) -> None:
        """Jobs ingest withdrew before they arrived: the status view hides them."""
        events = [JobWithdrawn(job_id=job_id) for job_id in sorted(job_ids)]
        await publish_confirmed("announcing withdrawn jobs", events, self.publisher.to_jobs)

    async def refused(self, event: EventUnion, reason: str) -> None:
        """A job the schedule cannot hold (dead-lettered) still ends: each of its images fails
        with the reason, so its status becomes `failed` instead of `scheduled` for ever."""
        if not isinstance(event, JobSubmitted):
            return
        try:
            outcomes = unschedulable(event, reason)
        except ValueError as exc:  # its own fields are what was refused: nothing to say it with
            log.error("job %s was dead-lettered and cannot be failed image by image: %s", event.job_id, exc)
            return
        await publish_confirmed("failing an unschedulable job", outcomes, self.publisher.to_results)


async def publish_confirmed(what: str, events: Sequence[Event],
                            send: Callable[[Sequence[Event]], Awaitable[Acks]]) -> None:
    """Hand the events to the producer and wait for their acknowledgements (sent again, and
    retried, until they come)."""
    acks = await send(events)
    await retry_record_work(what, lambda: wait_or_resend(acks, lambda: send(events)))
