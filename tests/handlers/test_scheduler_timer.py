"""The scheduler's timer use cases (services/scheduler/handlers/release.py) in-process: which
jobs a command may still take back, and how decisions move the timer. No Kafka, no database
(the table read on assignment is a fake)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from services.scheduler.domain import Decision
from services.scheduler.handlers import release
from services.scheduler.handlers.dispatch import Dispatcher
from services.scheduler.handlers.release import Releaser
from services.scheduler.settings import SchedulerSettings
from shared.events import JobSubmitted, Visit


def job(due: datetime) -> JobSubmitted:
    return JobSubmitted(job_id=uuid4(), scheduled_time=due, visits=(Visit(store_id="S1", image_urls=("http://x/1",)),))


def releaser() -> Releaser:
    settings = SchedulerSettings()
    return Releaser(settings, runtime=None, dispatcher=Dispatcher(settings, None, lambda: 1.0))  # type: ignore[arg-type]


def test_a_waiting_job_is_held_and_a_decision_moves_or_drops_it() -> None:
    timer, later = releaser(), datetime.now(UTC) + timedelta(hours=1)
    moved, cancelled, foreign = job(later), job(later), job(later)
    timer.add_submitted([(0, moved), (0, cancelled), (5, foreign)], owned={0})
    assert timer.holds(moved.job_id) and timer.holds(cancelled.job_id)
    assert not timer.holds(foreign.job_id)  # another instance's partition
    sooner = datetime.now(UTC) + timedelta(minutes=1)
    timer.apply_decisions([Decision(uuid4(), moved.job_id, "reschedule", True, "pending", sooner),
                           Decision(uuid4(), cancelled.job_id, "cancel", True, "cancelled")],
                          {moved.job_id: 0, cancelled.job_id: 0}, owned={0})
    assert timer.schedule.next_due_at() == sooner and not timer.holds(cancelled.job_id)
    assert timer.schedule.pop_due(later, 10) == [moved.job_id]  # once, at its new time


def test_jobs_already_due_when_loaded_are_not_held_until_released_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a crash the previous owner may have released them: no command may take them back."""
    overdue, future = uuid4(), uuid4()
    now = datetime.now(UTC)

    async def fake_load(_: Any, partitions: list[int]) -> list[tuple[Any, datetime, int, int]]:
        return [(overdue, now - timedelta(seconds=1), 0, 0), (future, now + timedelta(hours=1), 0, 0)]

    async def none_dispatching(_: Any, partitions: list[int]) -> list[Any]:
        return []
    monkeypatch.setattr(release, "load_pending", fake_load)
    monkeypatch.setattr(release, "load_dispatching", none_dispatching)
    timer = releaser()
    timer.runtime = type("R", (), {"pool": None})()  # type: ignore[assignment]
    asyncio.run(timer.load([0]))
    assert not timer.holds(overdue) and timer.holds(future)
    asyncio.run(timer.forget({0}))
    assert not timer.holds(future) and len(timer.schedule) == 0


def test_a_submit_republished_while_its_release_is_being_marked_is_not_held_again() -> None:
    """The table still says pending until the release is marked: the timer itself remembers."""
    timer, now = releaser(), datetime.now(UTC)
    due = job(now - timedelta(seconds=1))
    timer.add_submitted([(0, due)], owned={0})
    assert timer.take_due(now) == {due.job_id: 0}
    timer.add_submitted([(0, due)], owned={0})  # an Idempotency-Key retry read the row as pending
    assert not timer.holds(due.job_id) and timer.take_due(now) == {}
