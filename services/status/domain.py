"""The job status fold: pure, order-independent and idempotent.

`fold(view, event)` applies one event; applying any event twice changes nothing (outcomes
are keyed by `task_id`), and any order of results gives the same view. The database
projection (projector.py) stores exactly these fields; `derive_status` is shared by both.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from uuid import UUID

from shared.events import ImageFailed, ImageSucceeded, JobCancelled, JobReleased, JobRescheduled, JobSubmitted

SCHEDULED, ONGOING, COMPLETED, FAILED, CANCELLED = "scheduled", "ongoing", "completed", "failed", "cancelled"


def derive_status(*, total: int, released: bool, cancelled: bool, succeeded: int, failed: int) -> str:
    """Final once every image has an outcome; `ongoing` once released or any outcome exists.
    A cancel that lost the race with the release does not hide the work that was done."""
    if total > 0 and succeeded + failed >= total:
        return FAILED if failed else COMPLETED
    if cancelled and not released and succeeded + failed == 0:
        return CANCELLED
    if released or succeeded + failed > 0:
        return ONGOING
    return SCHEDULED


@dataclass(frozen=True)
class Outcome:
    store_id: str
    visit_index: int
    image_index: int
    error: str | None  # None: succeeded


@dataclass(frozen=True)
class JobView:
    job_id: UUID
    submitted: bool = False
    scheduled_time: datetime | None = None
    total: int = 0
    released: bool = False
    cancelled: bool = False
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    @property
    def succeeded(self) -> int:
        return sum(1 for o in self.outcomes.values() if o.error is None)

    @property
    def failed(self) -> int:
        return len(self.outcomes) - self.succeeded

    @property
    def status(self) -> str:
        return derive_status(total=self.total, released=self.released, cancelled=self.cancelled,
                             succeeded=self.succeeded, failed=self.failed)

    def errors(self) -> list[dict[str, str]]:
        return first_error_per_store(
            (o.store_id, o.visit_index, o.image_index, o.error)
            for o in self.outcomes.values() if o.error is not None)


def first_error_per_store(failures: object) -> list[dict[str, str]]:
    """One entry per failing store: the reason of its earliest image (visit, image order),
    listed in visit order, so the answer does not depend on the order results arrived in."""
    first: dict[str, tuple[int, int, str]] = {}
    for store_id, visit, image, error in failures:  # type: ignore[attr-defined]
        if store_id not in first or (visit, image) < first[store_id][:2]:
            first[store_id] = (visit, image, error)
    ordered = sorted(first.items(), key=lambda kv: kv[1][:2])
    return [{"store_id": store, "error": err} for store, (_, _, err) in ordered]


def fold(view: JobView, event: object) -> JobView:
    if isinstance(event, JobSubmitted):  # a re-published submit (Idempotency-Key retry) keeps a reschedule
        scheduled = view.scheduled_time if view.submitted else event.scheduled_time
        return replace(view, submitted=True, scheduled_time=scheduled, total=event.total_images)
    if isinstance(event, JobRescheduled):
        return replace(view, scheduled_time=event.scheduled_time)
    if isinstance(event, JobReleased):
        return replace(view, released=True, total=event.total_images)
    if isinstance(event, JobCancelled):
        return replace(view, cancelled=True)
    if isinstance(event, ImageSucceeded | ImageFailed):
        if event.task_id in view.outcomes:
            return view
        error = event.reason if isinstance(event, ImageFailed) else None
        outcome = Outcome(event.store_id, event.visit_index, event.image_index, error)
        return replace(view, outcomes={**view.outcomes, event.task_id: outcome})
    return view
