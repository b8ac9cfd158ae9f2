"""Cancel and reschedule decisions (services/scheduler/domain.py): pure, no Kafka."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.scheduler.domain import Found, Schedule, State, decide, decide_all, decision_event
from shared.events import JobCancelled, JobCancelRequested, JobCommandRefused, JobRescheduled, JobRescheduleRequested

T0 = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)


def cancel() -> JobCancelRequested:
    return JobCancelRequested(job_id=uuid4(), command_id=uuid4())


def reschedule(minutes: int = 5) -> JobRescheduleRequested:
    return JobRescheduleRequested(job_id=uuid4(), command_id=uuid4(), scheduled_time=T0 + timedelta(minutes=minutes))


def test_a_pending_job_is_cancelled_and_a_cancelled_one_stays_cancelled() -> None:
    for state in ("pending", "cancelled"):
        decision = decide(command := cancel(), state)
        assert (decision.accepted, decision.state) == (True, "cancelled")
        event = decision_event(decision)
        assert isinstance(event, JobCancelled)
        assert (event.job_id, event.command_id) == (command.job_id, command.command_id)


@pytest.mark.parametrize(("state", "named"), [("releasing", "released"), ("released", "released"), (None, "unknown")])
def test_a_cancel_after_the_release_claimed_the_job_is_refused(state: State, named: str) -> None:
    decision = decide(cancel(), state)
    assert (decision.accepted, decision.state) == (False, named)
    event = decision_event(decision)
    assert isinstance(event, JobCommandRefused) and event.command == "cancel" and event.state == named


def test_only_a_pending_job_is_rescheduled() -> None:
    accepted = decide(command := reschedule(7), "pending")
    assert accepted.accepted and accepted.scheduled_time == command.scheduled_time
    moved = decision_event(accepted)
    assert isinstance(moved, JobRescheduled) and moved.scheduled_time == T0 + timedelta(minutes=7)
    refusals: list[tuple[State, str]] = [("releasing", "released"), ("released", "released"),
                                         ("cancelled", "cancelled")]
    for state, named in refusals:
        refused = decide(reschedule(), state)
        assert (refused.accepted, refused.state, refused.scheduled_time) == (False, named, None)


def test_a_moved_job_falls_due_at_its_new_time_only() -> None:
    schedule, job, other = Schedule(), uuid4(), uuid4()
    schedule.add(job, T0, partition=1)
    schedule.add(other, T0 + timedelta(minutes=1), partition=1)
    schedule.move(job, T0 + timedelta(minutes=10), partition=1)
    assert len(schedule) == 2
    assert schedule.pop_due(T0 + timedelta(minutes=5), limit=10) == [other]  # the old entry is stale
    assert schedule.next_due_at() == T0 + timedelta(minutes=10)
    assert schedule.pop_due(T0 + timedelta(minutes=10), limit=10) == [job]


def test_a_moved_job_can_fall_due_earlier() -> None:
    schedule, job = Schedule(), uuid4()
    schedule.add(job, T0 + timedelta(minutes=10), partition=0)
    schedule.move(job, T0, partition=0)
    assert schedule.pop_due(T0, limit=10) == [job]
    assert schedule.pop_due(T0 + timedelta(hours=1), limit=10) == []  # the later entry is stale


def test_a_removed_job_never_falls_due() -> None:
    schedule, job = Schedule(), uuid4()
    schedule.add(job, T0, partition=0)
    assert schedule.remove(job) is True and schedule.remove(job) is False
    assert job not in schedule and len(schedule) == 0
    assert schedule.pop_due(T0 + timedelta(hours=1), limit=10) == []
    assert schedule.due_before(T0 + timedelta(hours=1), limit=10) == []


@given(st.lists(st.tuples(st.sampled_from(["add", "move", "remove", "pop"]),
                          st.integers(0, 5), st.integers(0, 60)), max_size=60))
def test_the_schedule_pops_each_pending_job_once_at_its_latest_time(ops: list[tuple[str, int, int]]) -> None:
    """Against a plain dict model: whatever the mix of adds, moves, removes and pops, the jobs
    that fall due are exactly the model's, at their latest time."""
    schedule, model = Schedule(), {}
    jobs = [uuid4() for _ in range(6)]
    for op, j, minutes in ops:
        when = T0 + timedelta(minutes=minutes)
        if op == "add":
            if schedule.add(jobs[j], when, 0):
                model[jobs[j]] = when
        elif op == "move":
            schedule.move(jobs[j], when, 0)
            model[jobs[j]] = when
        elif op == "remove":
            assert schedule.remove(jobs[j]) == (model.pop(jobs[j], None) is not None)
        else:
            due = schedule.pop_due(when, limit=100)
            expected = sorted((t, job) for job, t in model.items() if t <= when)
            assert due == [job for _, job in expected]
            for job in due:
                del model[job]
        assert len(schedule) == len(model)


def test_a_batch_is_decided_in_order_and_a_stored_or_repeated_command_keeps_its_answer() -> None:
    """decide_all: a later command sees an earlier one's effect; a pending job whose release has
    begun is refused as released; a decision stored before is returned, not made again."""
    first = cancel()
    then = JobRescheduleRequested(job_id=first.job_id, command_id=uuid4(), scheduled_time=T0)
    popped, before = cancel(), cancel()
    stored = decide(before, "pending")
    found = Found(withdrawn=set(), known={before.command_id: stored},
                  states={first.job_id: "pending", popped.job_id: "pending", before.job_id: "cancelled"})
    decided = decide_all([first, then, first, popped, before], found, begun=lambda job: job == popped.job_id)
    assert [(d.accepted, d.state, new) for d, new in decided] == [
        (True, "cancelled", True), (False, "cancelled", True), (True, "cancelled", False),
        (False, "released", True), (True, "cancelled", False)]
    assert decided[4][0] is stored and found.known == {before.command_id: stored}  # found is not changed


def test_a_withdrawn_command_is_refused_whatever_the_job_state() -> None:
    command = reschedule()
    [(decision, new)] = decide_all([command], Found({command.command_id}, {}, {command.job_id: "pending"}),
                                   begun=lambda job: False)
    assert (decision.accepted, decision.state, new) == (False, "withdrawn", True)
