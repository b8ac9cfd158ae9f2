"""The job status rules: pure.

`effects_of(events)` says what a batch of events changes (which jobs were submitted, released
or cancelled, which outcomes arrived, which jobs were moved, which commands were decided);
adapters/view.py stores those effects, which is the only fold of the topics. `derive_status`
turns a job's stored counters into its status, and `first_error_per_store` its error list.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from shared.api import JobStatus
from shared.events import (
    ImageFailed,
    ImageSucceeded,
    JobCancelled,
    JobCommandRefused,
    JobReleased,
    JobRescheduled,
    JobSubmitted,
    JobWithdrawn,
    TasksDispatched,
)
from shared.schedule_time import InvalidInput

SCHEDULED, ONGOING, COMPLETED, FAILED, CANCELLED = "scheduled", "ongoing", "completed", "failed", "cancelled"
STATUSES = (SCHEDULED, ONGOING, COMPLETED, FAILED, CANCELLED)
NOT_FOUND = "job not found"


@dataclass(frozen=True)
class JobRow:
    """A job as the view holds it."""

    job_id: UUID
    status: str
    scheduled_time: datetime
    total: int
    succeeded: int
    failed: int
    owner: str | None
    priority: int = 3
    dispatched: int = 0

    @property
    def started(self) -> int:
        """Images handed to the processors: dispatched, or (for jobs released before dispatch
        was counted) at least those with an outcome."""
        return min(self.total, max(self.dispatched, self.succeeded + self.failed))


@dataclass
class FoldCoverage:
    """Whether this process's fold holds every partition of the topics it folds (set by the
    projector at each assignment, cleared at each revocation). While it does, every change to
    the view is made by this process and announced by it before its transaction and after it
    (`Projector.announced`): the progress streams need not poll for other instances' changes,
    and status reads may be answered from memory (handlers/read_cache.py)."""

    complete: bool = False


@dataclass(frozen=True)
class Caller:
    """Who asks: their tenant (None without auth), whether keys are on, and the owners recorded
    before tenants existed that are the tenant's too (the hashes of its keys, shared/auth.py)."""

    owner: str | None
    keys_on: bool
    legacy: frozenset[str] = frozenset()

    @property
    def owners(self) -> list[str]:
        """Every owner a job of this caller's tenant may be recorded under."""
        return sorted(self.legacy if self.owner is None else self.legacy | {self.owner})

    def may_see(self, row: JobRow) -> bool:
        return not self.keys_on or row.owner == self.owner or row.owner in self.legacy


# -- what the use cases refuse with (app.py answers each with its HTTP status) -------------
# A malformed request is shared.schedule_time.InvalidInput (400), as in every service.
class JobNotFound(LookupError):
    """No such job of the caller's (unknown, or another tenant's), or nothing of it asked for."""

    def __init__(self, message: str = NOT_FOUND) -> None:
        super().__init__(message)


class RetryShortly(RuntimeError):
    """Nothing can be said or done right now (not connected, not folded yet, too many
    streams); the caller should retry in a moment."""


class CommandRefused(RuntimeError):
    """A cancel or reschedule of a job that is no longer scheduled; names its status."""

    def __init__(self, status: str, verb: str) -> None:
        super().__init__(f"job is already {status}; only a scheduled job can be {verb}")


class CommandUndecided(TimeoutError):
    """The release owner has not decided the command in time; it stays queued."""


def derive_status(*, total: int, released: bool, cancelled: bool, succeeded: int, failed: int,
                  withdrawn: bool = False) -> str:
    """Final once every image has an outcome; `ongoing` once released or any outcome exists.
    A cancelled job is never released (its release owner decided), so it has no outcomes; a
    cancel recorded before cancel became a command does not hide work that was done. A job
    ingest withdrew (its submit was answered 503) never runs: `cancelled`, and hidden."""
    if withdrawn:
        return CANCELLED
    if total > 0 and succeeded + failed >= total:
        return FAILED if failed else COMPLETED
    if cancelled and not released and succeeded + failed == 0:
        return CANCELLED
    if released or succeeded + failed > 0:
        return ONGOING
    return SCHEDULED


def first_error_per_store(failures: Iterable[Sequence[Any]]) -> list[dict[str, str]]:
    """One entry per failing store: the reason of its earliest image (visit, image order),
    listed in visit order, so the answer does not depend on the order results arrived in."""
    first: dict[str, tuple[int, int, str]] = {}
    for store_id, visit, image, error in failures:
        if store_id not in first or (visit, image) < first[store_id][:2]:
            first[store_id] = (visit, image, error)
    ordered = sorted(first.items(), key=lambda kv: kv[1][:2])
    return [{"store_id": store, "error": err} for store, (_, _, err) in ordered]


@dataclass
class Effects:
    """What a batch of events changes in the view. Every part is idempotent to store: flags,
    first-wins rows keyed by job, task or command."""

    submitted: dict[UUID, JobSubmitted] = field(default_factory=dict)
    released: set[UUID] = field(default_factory=set)
    cancelled: set[UUID] = field(default_factory=set)
    withdrawn: set[UUID] = field(default_factory=set)
    dispatched: dict[UUID, int] = field(default_factory=dict)  # job_id -> highest total dispatched
    outcomes: dict[str, ImageSucceeded | ImageFailed] = field(default_factory=dict)  # task_id -> first
    moved: dict[UUID, datetime] = field(default_factory=dict)  # job_id -> latest rescheduled time
    decisions: dict[UUID, tuple[UUID, bool, str]] = field(default_factory=dict)  # command -> (job, accepted, state)

    def touched(self) -> set[UUID]:
        """The jobs whose status may have changed."""
        return (set(self.submitted) | self.released | self.cancelled | self.withdrawn
                | {e.job_id for e in self.outcomes.values()})


def effects_of(events: list[Any]) -> Effects:
    effects = Effects()
    for event in events:
        _add(effects, event)
    return effects


def _add(effects: Effects, event: Any) -> None:
    if isinstance(event, JobSubmitted):
        effects.submitted.setdefault(event.job_id, event)  # a re-published submit is the same job
    elif isinstance(event, JobReleased):
        effects.released.add(event.job_id)
    elif isinstance(event, JobWithdrawn):
        effects.withdrawn.add(event.job_id)
    elif isinstance(event, TasksDispatched):
        for job_id, dispatched in event.totals().items():
            effects.dispatched[job_id] = max(dispatched, effects.dispatched.get(job_id, 0))
    elif isinstance(event, JobCancelled):
        effects.cancelled.add(event.job_id)
        if event.command_id is not None:
            effects.decisions.setdefault(event.command_id, (event.job_id, True, CANCELLED))
    elif isinstance(event, JobRescheduled):
        effects.moved[event.job_id] = event.scheduled_time
        effects.decisions.setdefault(event.command_id, (event.job_id, True, "pending"))
    elif isinstance(event, JobCommandRefused):
        effects.decisions.setdefault(event.command_id, (event.job_id, False, event.state))
    elif isinstance(event, ImageSucceeded | ImageFailed):
        effects.outcomes.setdefault(event.task_id, event)


def jobs_touched(events: Iterable[Any]) -> set[UUID]:
    """Every job a batch of events may change: each event's own, and the other jobs whose
    running totals a dispatch record carries (`TasksDispatched.others`). What the fold
    announces before its transaction and after it (the read cache and the progress streams
    rely on it)."""
    touched: set[UUID] = set()
    for event in events:
        touched.add(event.job_id)
        if isinstance(event, TasksDispatched):
            touched.update(event.others)
    return touched


def unstorable(outcome: ImageSucceeded | ImageFailed, reason: str) -> ImageFailed:
    """The failure that stands for an outcome the view could not store (it was dead-lettered):
    same image, a reason that says so."""
    return ImageFailed(job_id=outcome.job_id, task_id=outcome.task_id, visit_index=outcome.visit_index,
                       image_index=outcome.image_index, store_id=outcome.store_id, image_url=outcome.image_url,
                       reason=f"outcome could not be stored: {reason}"[:1000])


MAX_BATCH_IDS = 1000


def parse_job_ids(body: Any) -> list[str]:
    """The ids of a batch status request, `{"job_ids": [...]}`: 1 to MAX_BATCH_IDS strings,
    each a UUID, in the order asked with repeats dropped. InvalidInput names the field."""
    if not isinstance(body, dict) or not isinstance(body.get("job_ids"), list):
        raise InvalidInput('job_ids: required, a list of job ids, e.g. {"job_ids": ["3f1c2a9e-..."]}')
    raw = body["job_ids"]
    if not 1 <= len(raw) <= MAX_BATCH_IDS:
        raise InvalidInput(f"job_ids: from 1 to {MAX_BATCH_IDS} ids, got {len(raw)}")
    ids: dict[str, None] = {}
    for i, value in enumerate(raw):
        try:
            if not isinstance(value, str) or len(value) > 64:
                raise ValueError(value)
            ids.setdefault(str(UUID(value)), None)  # canonical form: as every answer spells ids
        except ValueError:
            raise InvalidInput(f"job_ids[{i}]: must be a UUID") from None
    return list(ids)


def progress_id(status: JobStatus) -> str:
    """The id of a progress event (Server-Sent Events' `id:`): changes whenever anything a
    client sees in the job's status changes, so a client resuming with `Last-Event-ID` is sent
    the current status only if it differs from the last one it got."""
    images = status.images
    return (f"{status.status}.{images.succeeded}.{images.failed}.{images.started}"
            f".{images.total}.{status.scheduled_time}")


# -- completion webhooks: a delivery's states and what an attempt sees ----------------------
PENDING, DELIVERED = "pending", "delivered"  # and FAILED: given up (the address is refused, or too late)


@dataclass(frozen=True)
class Due:
    """A delivery claimed for one attempt."""

    job_id: UUID
    webhook_id: str
    url: str
    attempts: int  # made before this one
    created_at: datetime  # when the job became final


@dataclass(frozen=True)
class Sent:
    """What one attempt got: the receiver's HTTP status, or why there was none. `refused`: the
    address is not allowed (or the URL cannot be used), which no retry changes."""

    status_code: int | None
    error: str | None
    duration_ms: int
    refused: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class Decision:
    state: str  # PENDING (tried again at next_attempt_at), DELIVERED or FAILED
    next_attempt_at: datetime | None = None


@dataclass(frozen=True)
class Recorded:
    """An attempt stored with its decision; `delay_s`: from the job's final status to its
    delivery (by the database's clock), once delivered."""

    delay_s: float | None


@dataclass(frozen=True)
class WebhookView:
    """A job's webhook as its owner sees it; `state` is `waiting` until the job is final."""

    url: str
    webhook_id: str
    state: str
    attempts: list[dict[str, Any]]
    next_attempt_at: datetime | None
    delivered_at: datetime | None
