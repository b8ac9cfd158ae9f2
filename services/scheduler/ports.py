"""What the scheduler's use cases (handlers/) need from the outside world, in its own terms.
The adapters (adapters/) implement these over PostgreSQL and Kafka; bootstrap.py wires them;
the handler tests (tests/handlers/fakes_scheduler.py) implement them in memory.

Sending is split in two, as Kafka's idempotent producer does it: a `send`-like method hands
the records over and returns their acknowledgements (futures) at once, so a use case can go
on (the next release, the next round) while the broker confirms; awaiting them is the use
case's business (handlers/dispatch.py: `wait_or_resend`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol
from uuid import UUID

from services.scheduler.domain import Decided, Decision, DispatchRow, Found, Stored
from shared.events import Event, JobCommand, JobSubmitted

Acks = list[asyncio.Future[object]]  # a record each, resolved with where it landed
TaskRecord = tuple[str, bytes, bytes, int | None]  # (topic, value, key, partition)


class Publisher(Protocol):
    """Events keyed by their job, handed to the producer."""

    async def to_jobs(self, events: Sequence[Event]) -> Acks: ...
    async def to_results(self, events: Sequence[Event]) -> Acks: ...


class SubmittedJobs(Protocol):
    """The durable schedule, as the consumer of the jobs topic fills it."""

    async def store(self, submitted: Sequence[tuple[int, JobSubmitted]]) -> Stored: ...


class ReleaseStore(Protocol):
    """The durable schedule, as the release timer reads and marks it."""

    async def load_pending(self, partitions: list[int]) -> list[tuple[UUID, datetime, int, int]]: ...
    async def pending_events(self, job_ids: list[UUID]) -> list[str]: ...
    async def mark_released(self, jobs: Sequence[JobSubmitted]) -> None: ...


class CommandLedger(Protocol):
    """Cancel and reschedule decisions, made durable with their effect on the schedule."""

    async def settle(self, commands: Sequence[JobCommand], decide: Callable[[Found], Decided]) -> Decided:
        """In one transaction: read what the schedule holds for the commands (`Found`), let
        `decide` answer them, store the new decisions and their effects; returns the answers."""
        ...

    async def publish(self, decisions: Sequence[Decision]) -> Acks:
        """The decisions' events handed to the producer (the jobs topic, keyed by job)."""
        ...


class DispatchStore(Protocol):
    """The durable schedule, as the dispatcher reads it and stores its cursors."""

    async def load_dispatching(self, partitions: list[int]) -> list[DispatchRow]: ...
    async def job_events(self, job_ids: list[UUID]) -> list[str]: ...
    async def record_dispatched(self, cursors: dict[UUID, int]) -> None: ...


class TaskSender(Protocol):
    """The tasks topic (and the running totals on the jobs topic) of a dispatch round."""

    async def partitions(self) -> int: ...
    async def send(self, records: Sequence[TaskRecord]) -> Acks: ...
