"""The job status fold (services/status/domain.py): statuses, errors, idempotence, order."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import reduce
from uuid import UUID

from hypothesis import given
from hypothesis import strategies as st

from services.status.domain import (
    COMPLETED,
    FAILED,
    ONGOING,
    SCHEDULED,
    JobView,
    derive_status,
    first_error_per_store,
    fold,
)
from shared.events import ImageFailed, ImageSucceeded, JobReleased, JobSubmitted, Visit, task_id_for

JOB = UUID("12345678-1234-5678-1234-567812345678")
WHEN = datetime(2025, 2, 16, 5, 27, tzinfo=UTC)


def submitted(*stores_and_counts: tuple[str, int]) -> JobSubmitted:
    visits = tuple(Visit(store_id=s, image_urls=tuple(f"https://x/{s}/{i}" for i in range(n)))
                   for s, n in stores_and_counts)
    return JobSubmitted(job_id=JOB, scheduled_time=WHEN, visits=visits)


def release(total: int) -> JobReleased:
    return JobReleased(job_id=JOB, scheduled_time=WHEN, total_images=total)


def common(store: str, v: int, i: int) -> dict[str, object]:
    return {"job_id": JOB, "task_id": task_id_for(JOB, v, i), "visit_index": v, "image_index": i,
            "store_id": store, "image_url": f"https://x/{store}/{i}"}


def ok(store: str, v: int, i: int) -> ImageSucceeded:
    return ImageSucceeded(**common(store, v, i), width=4, height=3, perimeter=14)  # type: ignore[arg-type]


def bad(store: str, v: int, i: int, reason: str = "HTTP 404") -> ImageFailed:
    return ImageFailed(**common(store, v, i), reason=reason)  # type: ignore[arg-type]


def run(*events: object) -> JobView:
    return reduce(fold, events, JobView(job_id=JOB))


def test_empty_view_is_scheduled_with_nothing() -> None:
    view = JobView(job_id=JOB)
    assert (view.status, view.total, view.succeeded, view.failed, view.errors()) == (SCHEDULED, 0, 0, 0, [])


def test_submitted_is_scheduled_with_total() -> None:
    view = run(submitted(("S1", 2), ("S2", 1)))
    assert view.submitted and view.scheduled_time == WHEN
    assert (view.status, view.total) == (SCHEDULED, 3)


def test_released_is_ongoing() -> None:
    assert run(submitted(("S1", 2)), release(2)).status == ONGOING


def test_partial_results_are_ongoing() -> None:
    view = run(submitted(("S1", 2)), release(2), ok("S1", 0, 0))
    assert (view.status, view.succeeded, view.failed) == (ONGOING, 1, 0)


def test_all_succeeded_is_completed() -> None:
    view = run(submitted(("S1", 2), ("S2", 1)), release(3), ok("S1", 0, 0), ok("S1", 0, 1), ok("S2", 1, 0))
    assert (view.status, view.succeeded, view.failed, view.errors()) == (COMPLETED, 3, 0, [])


def test_all_done_with_failures_is_failed_with_first_error_per_store() -> None:
    view = run(
        submitted(("S1", 3), ("S2", 2)), release(5),
        bad("S1", 0, 2, "late error"), ok("S1", 0, 1), bad("S1", 0, 0, "first error"),
        bad("S2", 1, 1, "S2 second"), bad("S2", 1, 0, "S2 first"),
    )
    assert (view.status, view.succeeded, view.failed) == (FAILED, 1, 4)
    assert view.errors() == [{"store_id": "S1", "error": "first error"},
                             {"store_id": "S2", "error": "S2 first"}]


def test_store_in_several_visits_reports_its_earliest_visit_error() -> None:
    view = run(submitted(("S1", 1), ("S2", 1), ("S1", 1)), release(3),
               bad("S1", 2, 0, "from visit 2"), bad("S2", 1, 0, "S2"), bad("S1", 0, 0, "from visit 0"))
    assert view.errors() == [{"store_id": "S1", "error": "from visit 0"}, {"store_id": "S2", "error": "S2"}]


def test_mixed_job_lists_only_failing_stores() -> None:
    view = run(submitted(("S1", 2), ("S2", 1), ("S3", 1)), release(4),
               ok("S1", 0, 0), ok("S1", 0, 1), bad("S2", 1, 0, "not an image"), ok("S3", 2, 0))
    assert view.status == FAILED
    assert view.errors() == [{"store_id": "S2", "error": "not an image"}]


def test_duplicate_outcome_is_counted_once() -> None:
    view = run(submitted(("S1", 2)), release(2), ok("S1", 0, 0), ok("S1", 0, 0))
    assert (view.status, view.succeeded) == (ONGOING, 1)


def test_results_before_submission_are_kept() -> None:
    view = run(ok("S1", 0, 0), bad("S1", 0, 1, "boom"))
    assert view.status == ONGOING  # total unknown yet
    view = fold(view, submitted(("S1", 2)))
    assert (view.status, view.errors()) == (FAILED, [{"store_id": "S1", "error": "boom"}])


def test_derive_status_table() -> None:
    assert derive_status(total=2, released=False, cancelled=False, succeeded=0, failed=0) == SCHEDULED
    assert derive_status(total=2, released=True, cancelled=False, succeeded=0, failed=0) == ONGOING
    assert derive_status(total=2, released=False, cancelled=False, succeeded=1, failed=0) == ONGOING
    assert derive_status(total=2, released=True, cancelled=False, succeeded=2, failed=0) == COMPLETED
    assert derive_status(total=2, released=True, cancelled=False, succeeded=1, failed=1) == FAILED
    assert derive_status(total=0, released=True, cancelled=False, succeeded=0, failed=0) == ONGOING


def test_first_error_per_store_is_independent_of_input_order() -> None:
    failures = [("B", 1, 1, "b11"), ("A", 0, 3, "a03"), ("B", 1, 0, "b10"), ("A", 2, 0, "a20"), ("C", 3, 0, "c")]
    expected = [{"store_id": "A", "error": "a03"}, {"store_id": "B", "error": "b10"}, {"store_id": "C", "error": "c"}]
    assert first_error_per_store(failures) == expected
    assert first_error_per_store(reversed(failures)) == expected


# --- properties -------------------------------------------------------------------------------

STORES = ["S1", "S2", "S3"]


@st.composite
def job_results(draw: st.DrawFn) -> tuple[JobSubmitted, list[object]]:
    """A job and one outcome per image for a subset of its images."""
    shape = draw(st.lists(st.tuples(st.sampled_from(STORES), st.integers(1, 3)), min_size=1, max_size=4))
    job = submitted(*shape)
    results: list[object] = []
    for v, (store, n) in enumerate(shape):
        for i in range(n):
            kind = draw(st.sampled_from(["ok", "bad", "none"]))
            if kind == "ok":
                results.append(ok(store, v, i))
            elif kind == "bad":
                results.append(bad(store, v, i, draw(st.sampled_from(["404", "timeout", "not an image"]))))
    return job, results


def summary(view: JobView) -> tuple[object, ...]:
    return view.status, view.total, view.succeeded, view.failed, view.errors()


@given(job_results(), st.data())
def test_applying_any_event_twice_equals_once(case: tuple[JobSubmitted, list[object]], data: st.DataObject) -> None:
    job, results = case
    events: list[object] = [job, release(job.total_images), *results]
    prefix = data.draw(st.integers(0, len(events)))
    view = run(*events[:prefix])
    event = data.draw(st.sampled_from(events))
    once = fold(view, event)
    assert fold(once, event) == once


@given(job_results(), st.data())
def test_any_order_of_results_gives_the_same_view(case: tuple[JobSubmitted, list[object]],
                                                  data: st.DataObject) -> None:
    job, results = case
    in_order = run(job, release(job.total_images), *results)
    events: list[object] = [job, release(job.total_images), *results, *results[: len(results) // 2]]
    shuffled = run(*data.draw(st.permutations(events)))
    assert summary(shuffled) == summary(in_order)
    assert shuffled == in_order
