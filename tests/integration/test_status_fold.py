"""The status fold, the one in production (services/status/adapters/view.py), on a scratch
database: statuses, per-store errors, and its properties (applying an event twice changes
nothing; any order and any batching of the same events gives the same view)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.status.domain import COMPLETED, FAILED, ONGOING, SCHEDULED
from tests.support.fold import ScratchView
from tests.support.jobs import JobEvents


def summary_of(scratch: ScratchView, job: JobEvents, *events: Any, batch_size: int | None = None) -> tuple[Any, ...]:
    scratch.fold(list(events), batch_size)
    return scratch.summary(job.job_id)


def test_submitted_is_scheduled_then_released_is_ongoing(scratch: ScratchView) -> None:
    job = JobEvents.new(("S1", 2), ("S2", 1))
    assert summary_of(scratch, job, job.submitted()) == (SCHEDULED, 3, 0, 0, [])
    assert summary_of(scratch, job, job.released(), job.ok("S1", 0, 0)) == (ONGOING, 3, 1, 0, [])


def test_all_succeeded_is_completed(scratch: ScratchView) -> None:
    job = JobEvents.new(("S1", 2), ("S2", 1))
    got = summary_of(scratch, job, job.submitted(), job.released(), job.ok("S1", 0, 0), job.ok("S1", 0, 1),
                     job.ok("S2", 1, 0))
    assert got == (COMPLETED, 3, 3, 0, [])


def test_all_done_with_failures_is_failed_with_the_first_error_per_store(scratch: ScratchView) -> None:
    job = JobEvents.new(("S1", 3), ("S2", 2))
    got = summary_of(scratch, job, job.submitted(), job.released(), job.bad("S1", 0, 2, "late error"),
                     job.ok("S1", 0, 1), job.bad("S1", 0, 0, "first error"), job.bad("S2", 1, 1, "S2 second"),
                     job.bad("S2", 1, 0, "S2 first"))
    assert got == (FAILED, 5, 1, 4, [{"store_id": "S1", "error": "first error"},
                                      {"store_id": "S2", "error": "S2 first"}])


def test_a_store_in_several_visits_reports_its_earliest_visit(scratch: ScratchView) -> None:
    job = JobEvents.new(("S1", 1), ("S2", 1), ("S1", 1))
    got = summary_of(scratch, job, job.submitted(), job.released(), job.bad("S1", 2, 0, "from visit 2"),
                     job.bad("S2", 1, 0, "S2"), job.bad("S1", 0, 0, "from visit 0"))
    assert got[4] == [{"store_id": "S1", "error": "from visit 0"}, {"store_id": "S2", "error": "S2"}]


def test_results_before_the_submission_are_kept(scratch: ScratchView) -> None:
    job = JobEvents.new(("S1", 2))
    assert summary_of(scratch, job, job.ok("S1", 0, 0), job.bad("S1", 0, 1, "boom"))[0] == ONGOING
    assert summary_of(scratch, job, job.submitted()) == (FAILED, 2, 1, 1, [{"store_id": "S1", "error": "boom"}])


@st.composite
def job_histories(draw: st.DrawFn) -> list[Any]:
    """A job's submission, release and one outcome for some of its images."""
    shape = draw(st.lists(st.tuples(st.sampled_from(["S1", "S2", "S3"]), st.integers(1, 3)), min_size=1, max_size=4))
    job = JobEvents.new(*shape)
    events: list[Any] = [job.submitted(), job.released()]
    for v, (store, n) in enumerate(shape):
        for i in range(n):
            kind = draw(st.sampled_from(["ok", "bad", "none"]))
            if kind == "ok":
                events.append(job.ok(store, v, i))
            elif kind == "bad":
                events.append(job.bad(store, v, i, draw(st.sampled_from(["404", "timeout", "not an image"]))))
    return events


def as_job(events: list[Any], job: JobEvents) -> list[Any]:
    """The same history for another job id (so each replay has a fresh row)."""
    def moved(event: Any) -> Any:
        update: dict[str, Any] = {"job_id": job.job_id}
        if hasattr(event, "task_id"):
            update["task_id"] = f"{job.job_id}:{event.visit_index}:{event.image_index}"
        return event.model_copy(update=update)
    return [moved(e) for e in events]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(job_histories(), st.data())
def test_any_order_batching_and_repeats_give_the_same_view(scratch: ScratchView, history: list[Any],
                                                           data: st.DataObject) -> None:
    in_order = JobEvents.new()
    expected = summary_of(scratch, in_order, *as_job(history, in_order))
    other = JobEvents.new()
    repeated = history + data.draw(st.lists(st.sampled_from(history), max_size=len(history)))
    shuffled = as_job(data.draw(st.permutations(repeated)), other)
    got = summary_of(scratch, other, *shuffled, batch_size=data.draw(st.integers(1, len(shuffled))))
    assert got == expected
