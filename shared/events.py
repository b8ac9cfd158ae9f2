"""The events services exchange over Kafka: frozen, versioned pydantic models, JSON on the wire.

Every event carries the envelope `event_id`, `type`, `schema_version`, `job_id`, `occurred_at`.
`decode_event` parses any of them through one discriminated union; a schema change bumps
`schema_version` and adds an upcaster in `_UPCASTERS`, so old events on the topics still decode.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeAlias
from uuid import UUID, uuid4

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

# Every field is bounded so that whatever decodes can be stored (issue 19, poison records):
# PostgreSQL text holds no NUL, its `int` columns hold 32 bits, and a timestamp must convert to
# UTC inside the range Python and PostgreSQL both hold. A record outside them fails decoding
# and is dead-lettered instead of being retried for ever against the database. The limits are
# well above what ingest accepts (store_id <= 64, URL <= 2048 characters).
INT32_MAX = 2**31 - 1
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)




def _in_range(moment: datetime) -> datetime:
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("timestamp out of range") from None
    if not EARLIEST <= utc <= LATEST:
        raise ValueError(f"timestamp out of range ({EARLIEST.year}-{LATEST.year})")
    return moment


_NO_NUL = r"^[^\x00]*$"
Name = Annotated[str, Field(max_length=256, pattern=_NO_NUL)]  # ids, store ids, states
Url = Annotated[str, Field(max_length=8192, pattern=_NO_NUL)]
Reason = Annotated[str, Field(max_length=10_000, pattern=_NO_NUL)]
VisitTime = Annotated[str, Field(max_length=64, pattern=_NO_NUL)]
Count = Annotated[int, Field(ge=0, le=INT32_MAX)]
MAX_JOBS_PER_DISPATCH_EVENT = 1000
# 1 (highest) to 5 (lowest); 3 when a submit does not say
Priority = Annotated[int, Field(ge=1, le=5)]
DEFAULT_PRIORITY = 3
Timestamp = Annotated[AwareDatetime, AfterValidator(_in_range)]


def iso(moment: datetime) -> str:
    """A moment as the API and the events write it: UTC, ISO 8601, `Z` for the zone."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def utcnow() -> datetime:
    return datetime.now(UTC)


def envelope(model: type[BaseModel], now: datetime | None = None) -> dict[str, Any]:
    """The envelope fields for `model.model_construct(...)`: given explicitly because pydantic
    2.x inspects each default_factory's signature on every construct (a hot path's cost)."""
    return {"event_id": uuid4(), "schema_version": model.model_fields["schema_version"].default,
            "occurred_at": now or utcnow()}


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: UUID = Field(default_factory=uuid4)
    schema_version: int = Field(1, ge=1, le=1000)
    job_id: UUID
    occurred_at: Timestamp = Field(default_factory=utcnow)


class Visit(BaseModel):
    model_config = ConfigDict(frozen=True)

    store_id: Name
    image_urls: tuple[Url, ...] = Field(max_length=1_000_000)
    visit_time: VisitTime | None = None


class JobSubmitted(Event):
    """A client's job was accepted; it is to run at `scheduled_time` (UTC)."""

    type: Literal["JobSubmitted"] = "JobSubmitted"
    scheduled_time: Timestamp
    visits: tuple[Visit, ...] = Field(max_length=1_000_000)
    # the tenant the job belongs to (API_KEYS); None without auth. Records written before
    # tenants existed carry a hash of the submitting key here.
    owner: Name | None = None
    priority: Priority = DEFAULT_PRIORITY
    # where the status service POSTs the job's final status, signed (Standard Webhooks); None:
    # no webhook. Ingest accepts it only when WEBHOOK_SECRET is set.
    callback_url: Url | None = None

    @property
    def total_images(self) -> int:
        return sum(len(v.image_urls) for v in self.visits)


class JobReleased(Event):
    """The scheduler emitted the job's tasks (at or after `scheduled_time`)."""

    type: Literal["JobReleased"] = "JobReleased"
    scheduled_time: Timestamp
    total_images: Count


class CommandEvent(Event):
    """A cancel or reschedule, asked or decided; `command_id` ties the decision to its request."""

    command_id: UUID


class JobCancelRequested(CommandEvent):
    """A client asked to cancel the job. Only a request: the job's release owner (the scheduler
    instance owning its partition) decides, in order with the release, and answers with
    `JobCancelled` or `JobCommandRefused` carrying the same `command_id`."""

    type: Literal["JobCancelRequested"] = "JobCancelRequested"


class JobRescheduleRequested(CommandEvent):
    """A client asked to move a job that has not been released to `scheduled_time` (UTC)."""

    type: Literal["JobRescheduleRequested"] = "JobRescheduleRequested"
    scheduled_time: Timestamp


JobCommand = JobCancelRequested | JobRescheduleRequested  # what a job's owner may ask of a pending job


class JobCancelled(Event):
    """Decided by the release owner: the job will never be released (no task, no result).
    `command_id` names the request; records written before commands carried ids have none."""

    type: Literal["JobCancelled"] = "JobCancelled"
    command_id: UUID | None = None


class JobRescheduled(CommandEvent):
    """Decided by the release owner: the job now runs at `scheduled_time` (UTC)."""

    type: Literal["JobRescheduled"] = "JobRescheduled"
    scheduled_time: Timestamp


class JobCommandRefused(CommandEvent):
    """Decided by the release owner: the command came too late (or for no job it holds).
    `state` is the job's state in the schedule: `released`, `cancelled` or `unknown`."""

    type: Literal["JobCommandRefused"] = "JobCommandRefused"
    command: Literal["cancel", "reschedule"]
    state: Name


class TasksDispatched(Event):
    """The scheduler has handed `dispatched` of the job's tasks to the processors so far (a
    running total: a repeat or an older total changes nothing). Released jobs are dispatched
    as the processors take work, shared fairly between tenants and jobs.

    `others`: the running totals of other jobs of the same partition of the jobs topic that
    were dispatched in the same round. One record per round and partition, rather than per
    job: in a burst of 10-image jobs a record per job cost the broker and every reader of the
    jobs topic about a tenth of the burst's CPU."""

    type: Literal["TasksDispatched"] = "TasksDispatched"
    dispatched: Count
    others: dict[UUID, Count] = Field(default_factory=dict, max_length=MAX_JOBS_PER_DISPATCH_EVENT)

    def totals(self) -> dict[UUID, int]:
        """Every job's running total this record carries."""
        return {**self.others, self.job_id: self.dispatched}


class JobWithdrawn(Event):
    """Its submit was not acknowledged in time and ingest withdrew it (answering 503) before
    the scheduler admitted it: the job never runs and is not visible; a `JobSubmitted` of it
    that reached the topic late is ignored."""

    type: Literal["JobWithdrawn"] = "JobWithdrawn"


class ImageTask(Event):
    """Process one image; `task_id` = `job_id:visit_index:image_index` is its idempotency key."""

    type: Literal["ImageTask"] = "ImageTask"
    task_id: Name
    visit_index: Count
    image_index: Count
    store_id: Name
    image_url: Url
    scheduled_time: Timestamp
    tenant: Name | None = None  # the job's owner: processors share their slots fairly by it
    priority: Priority = DEFAULT_PRIORITY


class ImageOutcome(Event):
    task_id: Name
    visit_index: Count
    image_index: Count
    store_id: Name
    image_url: Url


class ImageSucceeded(ImageOutcome):
    type: Literal["ImageSucceeded"] = "ImageSucceeded"
    width: Count
    height: Count
    perimeter: Count


class ImageFailed(ImageOutcome):
    type: Literal["ImageFailed"] = "ImageFailed"
    reason: Reason


FINAL_STATUSES = ("completed", "failed", "cancelled")  # a job in one of these never changes again


class JobStatusChanged(Event):
    """The job's status changed (compacted topic: the latest per job is kept)."""

    type: Literal["JobStatusChanged"] = "JobStatusChanged"
    status: Name
    total: Count
    succeeded: Count
    failed: Count


# Every event a topic carries: what `decode_event` returns (AnyEvent: the same, told apart by `type`)
EventUnion: TypeAlias = (
    JobSubmitted | JobReleased | JobCancelRequested | JobRescheduleRequested | JobCancelled
    | JobRescheduled | JobCommandRefused | JobWithdrawn | TasksDispatched | ImageTask | ImageSucceeded | ImageFailed
    | JobStatusChanged)
AnyEvent = Annotated[EventUnion, Field(discriminator="type")]
_ADAPTER: TypeAdapter[EventUnion] = TypeAdapter(AnyEvent)
_DICT: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])

# (type, schema_version) -> function upgrading the raw dict one version; none needed yet.
_UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


def decode_event(raw: bytes) -> EventUnion:
    """Parse bytes from a topic into an event; raises ValueError for anything else."""
    if not _UPCASTERS:
        return _ADAPTER.validate_json(raw)  # one pass: nothing to upgrade yet
    data = _DICT.validate_json(raw)
    while True:
        key = (data.get("type"), data.get("schema_version", 1))
        if not (isinstance(key[0], str) and isinstance(key[1], int)) or key not in _UPCASTERS:
            break  # a malformed envelope is left for the union to reject with a ValueError
        data = _UPCASTERS[key](data)
    return _ADAPTER.validate_python(data)


def encode_event(event: Event) -> bytes:
    return event.model_dump_json().encode()


def task_id_for(job_id: UUID, visit_index: int, image_index: int) -> str:
    return f"{job_id}:{visit_index}:{image_index}"
