"""In-memory fakes of the scheduler's ports (services/scheduler/ports.py) for the handler tests:
a schedule table, a ledger of command decisions and a producer whose sends are acknowledged
at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from services.scheduler.domain import Decided, Decision, DispatchRow, Found, State, Stored, decision_event
from services.scheduler.ports import Acks, TaskRecord
from shared.events import Event, JobCommand, JobSubmitted


@dataclass(frozen=True)
class Landed:
    partition: int
    offset: int


def acknowledged(results: Sequence[object]) -> Acks:
    acks: Acks = []
    for result in results:
        ack: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        ack.set_result(result)
        acks.append(ack)
    return acks


@dataclass
class FakePublisher:
    jobs: list[Event] = field(default_factory=list)
    results: list[Event] = field(default_factory=list)

    async def to_jobs(self, events: Sequence[Event]) -> Acks:
        self.jobs.extend(events)
        return acknowledged(events)

    async def to_results(self, events: Sequence[Event]) -> Acks:
        self.results.extend(events)
        return acknowledged(events)


@dataclass
class FakeTable:
    """`scheduler_jobs`: stored events by job, pending rows to load, rows half dispatched."""

    events: dict[UUID, JobSubmitted] = field(default_factory=dict)
    pending: list[tuple[UUID, datetime, int, int]] = field(default_factory=list)
    dispatching: list[DispatchRow] = field(default_factory=list)
    released: list[UUID] = field(default_factory=list)
    cursors: dict[UUID, int] = field(default_factory=dict)

    async def store(self, submitted: Sequence[tuple[int, JobSubmitted]]) -> Stored:
        for _, event in submitted:
            self.events.setdefault(event.job_id, event)
        return Stored(set(), set(self.released))

    async def load_pending(self, partitions: list[int]) -> list[tuple[UUID, datetime, int, int]]:
        return [row for row in self.pending if row[2] in partitions]

    async def pending_events(self, job_ids: list[UUID]) -> list[str]:
        return [self.events[j].model_dump_json() for j in job_ids if j in self.events and j not in self.released]

    async def mark_released(self, jobs: Sequence[JobSubmitted]) -> None:
        self.released.extend(job.job_id for job in jobs)

    async def load_dispatching(self, partitions: list[int]) -> list[DispatchRow]:
        return [row for row in self.dispatching if row.partition in partitions]

    async def job_events(self, job_ids: list[UUID]) -> list[str]:
        return [self.events[j].model_dump_json() for j in job_ids if j in self.events]

    async def record_dispatched(self, cursors: dict[UUID, int]) -> None:
        for job_id, n in cursors.items():
            self.cursors[job_id] = max(n, self.cursors.get(job_id, 0))


@dataclass
class FakeLedger:
    """`scheduler_commands` and the jobs' states: what `settle` reads and changes."""

    states: dict[UUID, State] = field(default_factory=dict)
    withdrawn: set[UUID] = field(default_factory=set)
    stored: dict[UUID, Decision] = field(default_factory=dict)
    published: list[Event] = field(default_factory=list)

    async def settle(self, commands: Sequence[JobCommand], decide: Callable[[Found], Decided]) -> Decided:
        found = Found(set(self.withdrawn) & {c.command_id for c in commands},
                      {c.command_id: self.stored[c.command_id] for c in commands if c.command_id in self.stored},
                      {c.job_id: self.states[c.job_id] for c in commands if c.job_id in self.states})
        decided = decide(found)
        for decision, new in decided:
            if new:
                self.stored[decision.command_id] = decision
                if decision.accepted and decision.command == "cancel":
                    self.states[decision.job_id] = "cancelled"
        return decided

    async def publish(self, decisions: Sequence[Decision]) -> Acks:
        events = [decision_event(d) for d in decisions]
        self.published.extend(events)
        return acknowledged(events)


@dataclass
class FakeTaskSender:
    """The tasks topic: each record lands at the next offset of its partition."""

    count: int = 4
    sent: list[TaskRecord] = field(default_factory=list)

    async def partitions(self) -> int:
        return self.count

    async def send(self, records: Sequence[TaskRecord]) -> Acks:
        landed = [Landed(partition or 0, len(self.sent) + n) for n, (_, _, _, partition) in enumerate(records)]
        self.sent.extend(records)
        return acknowledged(landed)
