"""The scheduler's timer use cases (services/scheduler/handlers/release.py) in-process: which
jobs a command may still take back, how the releaser decides cancel and reschedule as the
job's release owner, and how decisions move the timer. No Kafka, no database: the ports are
in-memory fakes (fakes_scheduler.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from services.scheduler.domain import Decision
from services.scheduler.handlers.dispatch import Dispatcher
from services.scheduler.handlers.release import Releaser
from services.scheduler.settings import SchedulerSettings
from shared.events import (
    JobCancelled,
    JobCancelRequested,
    JobCommandRefused,
    JobRescheduled,
    JobRescheduleRequested,
    JobSubmitted,
    Visit,
)
from tests.handlers.fakes_scheduler import FakeLedger, FakePublisher, FakeTable, FakeTaskSender


def job(due: datetime) -> JobSubmitted:
    return JobSubmitted(job_id=uuid4(), scheduled_time=due, visits=(Visit(store_id="S1", image_urls=("http://x/1",)),))


def releaser(table: FakeTable | None = None, ledger: FakeLedger | None = None) -> Releaser:
    settings, table = SchedulerSettings(), table or FakeTable()
    dispatcher = Dispatcher(settings, table, FakeTaskSender(), lambda: 1.0)
    return Releaser(settings, table, FakePublisher(), ledger or FakeLedger(), dispatcher)


def holding(ledger: FakeLedger, due: datetime) -> tuple[Releaser, JobSubmitted]:
    """A releaser holding one pending job of partition 0, its row pending in the ledger."""
    timer, held = releaser(ledger=ledger), job(due)
    timer.add_submitted([(0, held)], owned={0})
    ledger.states[held.job_id] = "pending"
    return timer, held


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


def test_jobs_already_due_when_loaded_are_not_held_until_released_again() -> None:
    """After a crash the previous owner may have released them: no command may take them back."""
    overdue, future = uuid4(), uuid4()
    now = datetime.now(UTC)
    table = FakeTable(pending=[(overdue, now - timedelta(seconds=1), 0, 0), (future, now + timedelta(hours=1), 0, 0),
                               (uuid4(), now + timedelta(hours=1), 3, 0)])
    timer = releaser(table)
    asyncio.run(timer.load([0]))
    assert not timer.holds(overdue) and timer.holds(future) and len(timer.schedule) == 2  # partition 3 not loaded
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


def test_the_release_owner_accepts_a_cancel_of_a_held_job_and_drops_it_from_the_timer() -> None:
    ledger, later = FakeLedger(), datetime.now(UTC) + timedelta(hours=1)
    timer, held = holding(ledger, later)
    cancel = JobCancelRequested(job_id=held.job_id, command_id=uuid4())
    [decision] = asyncio.run(timer.decide([(0, cancel)], owned=lambda: {0}))
    assert decision.accepted and decision.state == "cancelled"
    assert not timer.holds(held.job_id) and len(timer.schedule) == 0
    assert ledger.states[held.job_id] == "cancelled" and ledger.stored[cancel.command_id] == decision
    assert [type(e) for e in ledger.published] == [JobCancelled]


def test_a_command_on_a_job_whose_release_has_begun_is_refused_as_released() -> None:
    """The row still says pending, but the timer popped the job: the release wins the race."""
    ledger, now = FakeLedger(), datetime.now(UTC)
    timer, due = holding(ledger, now - timedelta(seconds=1))
    assert timer.take_due(now) == {due.job_id: 0}
    cancel = JobCancelRequested(job_id=due.job_id, command_id=uuid4())
    [decision] = asyncio.run(timer.decide([(0, cancel)], owned=lambda: {0}))
    assert not decision.accepted and decision.state == "released"
    assert ledger.states[due.job_id] == "pending"  # nothing changed in the table
    assert isinstance(ledger.published[0], JobCommandRefused) and ledger.published[0].state == "released"


def test_a_reschedule_moves_the_job_and_a_redelivered_command_gets_its_stored_answer() -> None:
    ledger, later = FakeLedger(), datetime.now(UTC) + timedelta(hours=1)
    timer, held = holding(ledger, later)
    sooner = datetime.now(UTC) + timedelta(minutes=1)
    move = JobRescheduleRequested(job_id=held.job_id, command_id=uuid4(), scheduled_time=sooner)
    [first] = asyncio.run(timer.decide([(0, move)], owned=lambda: {0}))
    assert first.accepted and timer.schedule.next_due_at() == sooner
    timer.schedule.move(held.job_id, later, 0)  # had the timer been moved again, a repeat must not touch it
    [again] = asyncio.run(timer.decide([(0, move)], owned=lambda: {0}))
    assert again == first and timer.schedule.next_due_at() == later
    assert [type(e) for e in ledger.published] == [JobRescheduled, JobRescheduled]


def test_a_withdrawn_command_changes_nothing() -> None:
    ledger, later = FakeLedger(), datetime.now(UTC) + timedelta(hours=1)
    timer, held = holding(ledger, later)
    cancel = JobCancelRequested(job_id=held.job_id, command_id=uuid4())
    ledger.withdrawn.add(cancel.command_id)
    [decision] = asyncio.run(timer.decide([(0, cancel)], owned=lambda: {0}))
    assert not decision.accepted and decision.state == "withdrawn" and timer.holds(held.job_id)


def test_the_partitions_owned_are_asked_after_the_decisions_are_durable() -> None:
    """A partition assigned back while a reschedule was being settled: a load that ran before
    the decision was stored read the old time, so the timer itself must move the job. Asking
    which partitions are owned before settling (partition 0 not yet back) would leave the job
    due at its old time while the client was told the new one."""
    ledger, later = FakeLedger(), datetime.now(UTC) + timedelta(hours=1)
    timer, held = holding(ledger, later)
    sooner = datetime.now(UTC) + timedelta(minutes=1)
    move = JobRescheduleRequested(job_id=held.job_id, command_id=uuid4(), scheduled_time=sooner)
    owned_once_stored = lambda: {0} if move.command_id in ledger.stored else set()  # noqa: E731
    [decision] = asyncio.run(timer.decide([(0, move)], owned=owned_once_stored))
    assert decision.accepted and timer.schedule.next_due_at() == sooner


def test_revoking_a_partition_forgets_where_its_half_dispatched_jobs_were_to_resume() -> None:
    """A job found due and half dispatched on assignment is resumed from its count when released
    here; if its partition is revoked first, its new owner resumes it, and nothing of it stays."""
    table = FakeTable()
    timer, due = releaser(table), datetime.now(UTC) - timedelta(seconds=1)
    lost, kept = uuid4(), uuid4()
    table.pending = [(lost, due, 3, 2), (kept, due, 4, 1)]  # (job, due, partition, dispatched)

    async def scenario() -> None:
        await timer.load([3, 4])
        assert timer._resume == {lost: 2, kept: 1}  # noqa: SLF001
        await timer.forget({3})
    asyncio.run(scenario())
    assert timer._resume == {kept: 1} and not timer.holds(lost)  # noqa: SLF001
