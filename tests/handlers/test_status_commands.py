"""Cancel and reschedule use cases (services/status/handlers/commands.py) in-process: the fake
view and a fake command bus that decides like a scheduler would (tests/handlers/fakes_status.py),
no Kafka, no database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.status.domain import Caller, CommandRefused, CommandUndecided, FoldCoverage, JobNotFound, RetryShortly
from services.status.handlers.commands import Decisions, JobCommands
from services.status.handlers.jobs import JobReader
from services.status.handlers.read_cache import ReadCache
from shared.api import JobChanged
from shared.events import JobCancelRequested, JobCommand, iso
from shared.publishing import NotAccepted
from shared.schedule_time import InvalidInput
from tests.handlers.fakes_status import FakeBus, FakeEnds, FakeView, reader

LATER = datetime.now(UTC) + timedelta(hours=1)
ANYONE = Caller(None, keys_on=False)
Decide = Callable[[FakeView, JobCommand], None]


def call(view: FakeView, bus: FakeBus, method: str, *args: Any) -> JobChanged:
    """Run one use case with the decisions poller running, as the service does."""
    async def run() -> JobChanged:
        decisions = Decisions(view)
        poller = asyncio.create_task(decisions.run())
        try:
            commands = JobCommands(reader(view, wait_s=0.2), bus, decisions, ZoneInfo("Asia/Kolkata"), 366,
                                   wait_s=0.3, view_wait_s=0.2)
            answer: JobChanged = await getattr(commands, method)(*args)
            return answer
        finally:
            poller.cancel()
    return asyncio.run(run())


def accept(view: FakeView, command: JobCommand) -> None:
    if isinstance(command, JobCancelRequested):
        view.move(command.job_id, "cancelled")
        view.folded[command.command_id] = (True, "cancelled")
    else:
        view.move(command.job_id, "scheduled", scheduled_time=command.scheduled_time)
        view.folded[command.command_id] = (True, "pending")


def refuse_as_released(view: FakeView, command: JobCommand) -> None:
    view.move(command.job_id, "ongoing")
    view.folded[command.command_id] = (False, "released")


def test_an_accepted_cancel_answers_with_what_a_read_now_says() -> None:
    view = FakeView()
    job = view.add("scheduled", scheduled_time=LATER)
    answer = call(view, FakeBus(view, accept), "cancel", str(job), ANYONE)
    assert answer == JobChanged(job_id=str(job), status="cancelled", scheduled_time=iso(LATER))


def test_a_refused_cancel_names_the_status_the_job_is_in() -> None:
    view = FakeView()
    job = view.add("scheduled")
    with pytest.raises(CommandRefused) as refused:
        call(view, FakeBus(view, refuse_as_released), "cancel", str(job), ANYONE)
    assert str(refused.value) == "job is already ongoing; only a scheduled job can be cancelled"


def test_a_released_or_cancelled_job_is_answered_without_a_command() -> None:
    view = FakeView()
    bus = FakeBus(view)
    ongoing, cancelled = view.add("ongoing"), view.add("cancelled")
    with pytest.raises(CommandRefused, match="job is already ongoing"):
        call(view, bus, "cancel", str(ongoing), ANYONE)
    assert call(view, bus, "cancel", str(cancelled), ANYONE).status == "cancelled"
    assert bus.published == []


def test_no_decision_in_time_says_the_command_stays_queued() -> None:
    view = FakeView()
    with pytest.raises(CommandUndecided, match="has not decided the cancel yet; it stays queued"):
        call(view, FakeBus(view), "cancel", str(view.add("scheduled")), ANYONE)


def test_a_command_kafka_did_not_take_changed_nothing_and_says_retry() -> None:
    view = FakeView()

    def not_taken(_: FakeView, __: JobCommand) -> None:
        raise NotAccepted("not acknowledged in time; withdrawn")
    with pytest.raises(RetryShortly, match="nothing was changed, retry shortly"):
        call(view, FakeBus(view, not_taken), "cancel", str(view.add("scheduled")), ANYONE)


def test_a_reschedule_is_validated_before_anything_is_published() -> None:
    view = FakeView()
    bus = FakeBus(view, accept)
    job = str(view.add("scheduled"))
    for body in ({}, {"scheduled_time": "soon"}, {"scheduled_time": "2999-01-01T00:00:00Z"}):
        with pytest.raises(InvalidInput, match="scheduled_time"):
            call(view, bus, "reschedule", job, ANYONE, body)
    assert bus.published == []
    moved = call(view, bus, "reschedule", job, ANYONE, {"scheduled_time": "2020-01-01T00:00:00Z"})
    assert moved.status == "scheduled" and moved.scheduled_time <= iso(datetime.now(UTC))
    assert len(bus.published) == 1


def test_another_keys_job_is_not_found() -> None:
    view = FakeView()
    job = view.add("scheduled", owner="alice")
    bus = FakeBus(view, accept)
    with pytest.raises(JobNotFound):
        call(view, bus, "cancel", str(job), Caller("mallory", keys_on=True))
    assert view.folded == {} and bus.published == []


def test_a_status_read_right_after_an_accepted_cancel_says_cancelled_even_from_a_cached_status() -> None:
    """The fake bus changes the view and folds the decision without the fold's announcement to
    the read cache (the moment the two race): the command itself tells the cache."""
    async def run() -> str:
        view = FakeView()
        job = view.add("scheduled", scheduled_time=LATER)
        cache = ReadCache(view, FoldCoverage(complete=True), max_jobs=100, max_age_s=60)
        jobs = JobReader(view, FakeEnds(), lambda: True, 0.2, cache)
        assert (await jobs.status(str(job), ANYONE)).status == "scheduled"  # now cached
        decisions = Decisions(view)
        poller = asyncio.create_task(decisions.run())
        try:
            commands = JobCommands(jobs, FakeBus(view, accept), decisions, ZoneInfo("Asia/Kolkata"), 366,
                                   wait_s=0.3, view_wait_s=0.2)
            await commands.cancel(str(job), ANYONE)
        finally:
            poller.cancel()
        return (await jobs.status(str(job), ANYONE)).status
    assert asyncio.run(run()) == "cancelled"
