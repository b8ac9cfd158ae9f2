"""In-memory fakes of the status service's ports (services/status/ports.py): the view (with
folded command decisions), the jobs topic's partition ends, and the command bus. The tests move
the view's rows themselves; nothing here touches Kafka or PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from services.status.domain import JobRow, WebhookView
from services.status.handlers.jobs import JobReader
from shared.events import JobCommand

AT = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


class FakeView:
    """The status view: job rows, failed images, per-image results and folded decisions
    (implements ViewReads and DecisionReads). `queries` counts the many-jobs reads."""

    def __init__(self) -> None:
        self.rows: dict[UUID, JobRow] = {}
        self.errors: dict[UUID, list[Any]] = {}
        self.results: dict[UUID, list[dict[str, Any]]] = {}
        self.submitted_at: dict[UUID, datetime] = {}
        self.folded: dict[UUID, tuple[bool, str]] = {}  # command_id -> (accepted, state)
        self.queries = 0
        self.folded_up_to = 10  # the fold's offset on every partition (FakeEnds says 10 is the end)

    def add(self, status: str = "scheduled", owner: str | None = None, total: int = 2,
            scheduled_time: datetime = AT) -> UUID:
        job_id = uuid4()
        self.rows[job_id] = JobRow(job_id, status, scheduled_time, total, 0, 0, owner)
        self.submitted_at[job_id] = datetime.now(UTC)
        return job_id

    def move(self, job_id: UUID, status: str, succeeded: int = 0, failed: int = 0,
             scheduled_time: datetime | None = None) -> None:
        row = self.rows[job_id]
        self.rows[job_id] = JobRow(job_id, status, scheduled_time or row.scheduled_time, row.total, succeeded,
                                   failed, row.owner, dispatched=row.total if succeeded + failed else 0)

    async def load_job(self, job_id: UUID) -> JobRow | None:
        self.queries += 1
        return self.rows.get(job_id)

    async def load_jobs(self, job_ids: list[UUID]) -> list[tuple[JobRow, list[Any] | None]]:
        self.queries += 1
        return [(self.rows[j], self.errors.get(j)) for j in job_ids if j in self.rows]

    async def folded_offsets(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return {tp: self.folded_up_to for tp in partitions}

    async def list_jobs(self, owners: list[str], keys_on: bool, status: str | None, limit: int,
                        after: tuple[datetime, UUID] | None) -> list[tuple[JobRow, datetime]]:
        rows = sorted(((row, self.submitted_at[row.job_id]) for row in self.rows.values()
                       if (not keys_on or row.owner in owners) and status in (None, row.status)),
                      key=lambda pair: (pair[1], pair[0].job_id), reverse=True)
        if after is not None:
            rows = [(row, at) for row, at in rows if (at, row.job_id) < after]
        return rows[:limit]

    async def results_page(self, job_id: UUID, limit: int, offset: int) -> list[dict[str, Any]]:
        return self.results.get(job_id, [])[offset:offset + limit]

    async def decisions(self, command_ids: list[UUID]) -> dict[UUID, tuple[bool, str]]:
        return {c: d for c, d in self.folded.items() if c in command_ids}


class FakeEnds:
    """The jobs topic: every job on partition 0, whose end is offset 10."""

    async def __call__(self, job_ids: list[UUID]) -> dict[UUID, tuple[str, int, int]]:
        return {job_id: ("jobs", 0, 10) for job_id in job_ids}


class FakeBus:
    """The command bus: records each command and lets `decide` play the scheduler and the
    projector (it changes the view and folds the decision), or leaves it undecided."""

    def __init__(self, view: FakeView, decide: Callable[[FakeView, JobCommand], None] | None = None) -> None:
        self.view, self.decide = view, decide
        self.published: list[JobCommand] = []

    async def __call__(self, command: JobCommand) -> None:
        self.published.append(command)
        if self.decide is not None:
            self.decide(self.view, command)


class FakeWebhooks:
    """The webhook lookup: each job's webhook as its owner sees it (absent: no callback_url)."""

    def __init__(self, seen: dict[UUID, WebhookView]) -> None:
        self.seen = seen

    async def webhook_of(self, job_id: UUID) -> WebhookView | None:
        return self.seen.get(job_id)


def reader(view: FakeView, wait_s: float = 0.3, connected: bool = True) -> JobReader:
    return JobReader(view, FakeEnds(), lambda: connected, wait_s)
