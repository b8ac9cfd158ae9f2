"""The status rules (services/status/domain.py): pure, no database."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from services.status.domain import (
    COMPLETED,
    FAILED,
    ONGOING,
    SCHEDULED,
    derive_status,
    effects_of,
    first_error_per_store,
)
from shared.events import JobCancelled, JobCommandRefused, JobRescheduled
from tests.support.jobs import JobEvents


def test_derive_status_table() -> None:
    assert derive_status(total=2, released=False, cancelled=False, succeeded=0, failed=0) == SCHEDULED
    assert derive_status(total=2, released=True, cancelled=False, succeeded=0, failed=0) == ONGOING
    assert derive_status(total=2, released=False, cancelled=False, succeeded=1, failed=0) == ONGOING
    assert derive_status(total=2, released=True, cancelled=False, succeeded=2, failed=0) == COMPLETED
    assert derive_status(total=2, released=True, cancelled=False, succeeded=1, failed=1) == FAILED
    assert derive_status(total=0, released=True, cancelled=False, succeeded=0, failed=0) == ONGOING
    assert derive_status(total=2, released=False, cancelled=True, succeeded=0, failed=0) == "cancelled"


def test_first_error_per_store_is_independent_of_input_order() -> None:
    failures = [("B", 1, 1, "b11"), ("A", 0, 3, "a03"), ("B", 1, 0, "b10"), ("A", 2, 0, "a20"), ("C", 3, 0, "c")]
    expected = [{"store_id": "A", "error": "a03"}, {"store_id": "B", "error": "b10"}, {"store_id": "C", "error": "c"}]
    assert first_error_per_store(failures) == expected
    assert first_error_per_store(reversed(failures)) == expected


def test_effects_keep_the_first_of_each_and_the_last_move() -> None:
    job = JobEvents.new(("S1", 2))
    first, later = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC)
    cancel, refused = uuid4(), uuid4()
    effects = effects_of([job.submitted(), job.submitted(), job.ok("S1", 0, 0), job.ok("S1", 0, 0),
                          job.bad("S1", 0, 1), job.released(),
                          JobRescheduled(job_id=job.job_id, command_id=uuid4(), scheduled_time=first),
                          JobRescheduled(job_id=job.job_id, command_id=uuid4(), scheduled_time=later),
                          JobCommandRefused(job_id=job.job_id, command_id=refused, command="cancel", state="released"),
                          JobCancelled(job_id=job.job_id, command_id=cancel)])
    assert list(effects.submitted) == [job.job_id] and effects.released == {job.job_id}
    assert sorted(effects.outcomes) == [f"{job.job_id}:0:0", f"{job.job_id}:0:1"]
    assert effects.moved == {job.job_id: later}
    assert effects.decisions[refused] == (job.job_id, False, "released")
    assert effects.decisions[cancel] == (job.job_id, True, "cancelled")
    assert effects.touched() == {job.job_id}


def test_a_cancel_written_before_commands_existed_has_no_decision() -> None:
    job = JobEvents.new(("S1", 1))
    effects = effects_of([JobCancelled(job_id=job.job_id)])
    assert effects.cancelled == {job.job_id} and effects.decisions == {}
