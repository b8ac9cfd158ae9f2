"""Cancel and reschedule use cases (services/status/handlers/commands.py) in-process: a fake
view, a fake command bus that decides like a scheduler would, no Kafka, no database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

from services.status.adapters.view import JobRow
from services.status.handlers.commands import Decisions, JobCommands
from services.status.handlers.jobs import Caller, JobReader
from shared.events import JobCancelRequested

LATER = datetime.now(UTC) + timedelta(hours=1)
ANYONE = Caller(None, keys_on=False)


class FakeView:
    """The view: job rows and folded decisions; `decide` plays the scheduler and projector."""

    def __init__(self) -> None:
        self.jobs: dict[UUID, JobRow] = {}
        self.folded: dict[UUID, tuple[bool, str]] = {}

    def add(self, status: str, owner: str | None = None) -> str:
        job_id = uuid4()
        self.jobs[job_id] = JobRow(job_id, status, LATER, 2, 0, 0, owner)
        return str(job_id)

    async def load_job(self, job_id: UUID) -> JobRow | None:
        return self.jobs.get(job_id)

    async def load_jobs(self, job_ids: list[UUID]) -> list[tuple[JobRow, list[Any] | None]]:
        return [(self.jobs[j], None) for j in job_ids if j in self.jobs]

    async def folded_offsets(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return {tp: 10 for tp in partitions}  # folded past every end: a missing job is unknown

    async def failures(self, job_id: UUID) -> list[tuple[str, int, int, str]]:
        return []

    async def results_page(self, job_id: UUID, limit: int, offset: int) -> list[dict[str, Any]]:
        return []

    async def decisions(self, command_ids: list[UUID]) -> dict[UUID, tuple[bool, str]]:
        return {c: d for c, d in self.folded.items() if c in command_ids}


def use_cases(view: FakeView, decide: Any = None) -> JobCommands:
    async def publish(command: Any) -> None:
        if decide is not None:
            decide(view, command)

    async def ends(job_ids: list[UUID]) -> dict[UUID, tuple[str, int, int]]:
        return {job_id: ("jobs", 0, 10) for job_id in job_ids}
    reader = JobReader(view, ends, lambda: True, wait_s=0.2)
    return JobCommands(reader, publish, Decisions(view), ZoneInfo("Asia/Kolkata"), 366, wait_s=0.3, view_wait_s=0.2)


async def with_poller(view: FakeView, run: Any) -> Any:
    decisions = Decisions(view)
    poller = asyncio.create_task(decisions.run())
    try:
        return await run(decisions)
    finally:
        poller.cancel()


def call(view: FakeView, decide: Any, method: str, *args: Any) -> Any:
    async def run(decisions: Decisions) -> Any:
        cases = use_cases(view, decide)
        cases.decisions = decisions
        return await getattr(cases, method)(*args)
    return asyncio.run(with_poller(view, run))


def accept(view: FakeView, command: Any) -> None:
    row = view.jobs[command.job_id]
    if isinstance(command, JobCancelRequested):
        view.jobs[command.job_id] = JobRow(row.job_id, "cancelled", row.scheduled_time, 2, 0, 0, row.owner)
        view.folded[command.command_id] = (True, "cancelled")
    else:
        view.jobs[command.job_id] = JobRow(row.job_id, row.status, command.scheduled_time, 2, 0, 0, row.owner)
        view.folded[command.command_id] = (True, "pending")


def refuse_as_released(view: FakeView, command: Any) -> None:
    row = view.jobs[command.job_id]
    view.jobs[command.job_id] = JobRow(row.job_id, "ongoing", row.scheduled_time, 2, 0, 0, row.owner)
    view.folded[command.command_id] = (False, "released")


def test_an_accepted_cancel_answers_200_with_what_a_read_now_says() -> None:
    view = FakeView()
    job = view.add("scheduled")
    reply = call(view, accept, "cancel", job, ANYONE)
    assert (reply.status, reply.body["status"]) == (200, "cancelled")


def test_a_refused_cancel_names_the_status_the_job_is_in() -> None:
    view = FakeView()
    job = view.add("scheduled")
    reply = call(view, refuse_as_released, "cancel", job, ANYONE)
    assert reply.status == 409 and reply.body["error"].startswith("job is already ongoing")


def test_a_released_or_cancelled_job_is_answered_without_a_command() -> None:
    view = FakeView()
    published: list[Any] = []
    ongoing, cancelled = view.add("ongoing"), view.add("cancelled")
    assert call(view, lambda _, c: published.append(c), "cancel", ongoing, ANYONE).status == 409
    assert call(view, lambda _, c: published.append(c), "cancel", cancelled, ANYONE).status == 200
    assert published == []


def test_no_decision_in_time_is_504_and_says_the_command_stays_queued() -> None:
    view = FakeView()
    reply = call(view, None, "cancel", view.add("scheduled"), ANYONE)
    assert reply.status == 504 and "has not decided the cancel yet; it stays queued" in reply.body["error"]


def test_a_reschedule_is_validated_before_anything_is_published() -> None:
    view = FakeView()
    published: list[Any] = []
    job = view.add("scheduled")
    for body in ({}, {"scheduled_time": "soon"}, {"scheduled_time": "2999-01-01T00:00:00Z"}):
        assert call(view, lambda _, c: published.append(c), "reschedule", job, ANYONE, body).status == 400
    assert published == []
    moved = call(view, accept, "reschedule", job, ANYONE, {"scheduled_time": "2020-01-01T00:00:00Z"})
    assert moved.status == 200 and moved.body["scheduled_time"] <= datetime.now(UTC).isoformat()


def test_another_keys_job_is_not_found() -> None:
    view = FakeView()
    job = view.add("scheduled", owner="alice")
    reply = call(view, accept, "cancel", job, Caller("mallory", keys_on=True))
    assert reply.status == 404 and view.folded == {}
