"""The events services exchange over Kafka: frozen, versioned pydantic models, JSON on the wire.

Every event carries the envelope `event_id`, `type`, `schema_version`, `job_id`, `occurred_at`.
`decode_event` parses any of them through one discriminated union; a schema change bumps
`schema_version` and adds an upcaster in `_UPCASTERS`, so old events on the topics still decode.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter


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
    schema_version: int = 1
    job_id: UUID
    occurred_at: AwareDatetime = Field(default_factory=utcnow)


class Visit(BaseModel):
    model_config = ConfigDict(frozen=True)

    store_id: str
    image_urls: tuple[str, ...]
    visit_time: str | None = None


class JobSubmitted(Event):
    """A client's job was accepted; it is to run at `scheduled_time` (UTC)."""

    type: Literal["JobSubmitted"] = "JobSubmitted"
    scheduled_time: AwareDatetime
    visits: tuple[Visit, ...]
    owner: str | None = None  # hash of the submitting API key; None without auth

    @property
    def total_images(self) -> int:
        return sum(len(v.image_urls) for v in self.visits)


class JobReleased(Event):
    """The scheduler emitted the job's tasks (at or after `scheduled_time`)."""

    type: Literal["JobReleased"] = "JobReleased"
    scheduled_time: AwareDatetime
    total_images: int


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
    scheduled_time: AwareDatetime


class JobCancelled(Event):
    """Decided by the release owner: the job will never be released (no task, no result).
    `command_id` names the request; records written before schema 1.1 have none."""

    type: Literal["JobCancelled"] = "JobCancelled"
    command_id: UUID | None = None


class JobRescheduled(CommandEvent):
    """Decided by the release owner: the job now runs at `scheduled_time` (UTC)."""

    type: Literal["JobRescheduled"] = "JobRescheduled"
    scheduled_time: AwareDatetime


class JobCommandRefused(CommandEvent):
    """Decided by the release owner: the command came too late (or for no job it holds).
    `state` is the job's state in the schedule: `released`, `cancelled` or `unknown`."""

    type: Literal["JobCommandRefused"] = "JobCommandRefused"
    command: Literal["cancel", "reschedule"]
    state: str


class ImageTask(Event):
    """Process one image; `task_id` = `job_id:visit_index:image_index` is its idempotency key."""

    type: Literal["ImageTask"] = "ImageTask"
    task_id: str
    visit_index: int
    image_index: int
    store_id: str
    image_url: str
    scheduled_time: AwareDatetime


class ImageOutcome(Event):
    task_id: str
    visit_index: int
    image_index: int
    store_id: str
    image_url: str


class ImageSucceeded(ImageOutcome):
    type: Literal["ImageSucceeded"] = "ImageSucceeded"
    width: int
    height: int
    perimeter: int


class ImageFailed(ImageOutcome):
    type: Literal["ImageFailed"] = "ImageFailed"
    reason: str


class JobStatusChanged(Event):
    """The job's status changed (compacted topic: the latest per job is kept)."""

    type: Literal["JobStatusChanged"] = "JobStatusChanged"
    status: str
    total: int
    succeeded: int
    failed: int


AnyEvent = Annotated[
    JobSubmitted | JobReleased | JobCancelRequested | JobRescheduleRequested | JobCancelled
    | JobRescheduled | JobCommandRefused | ImageTask | ImageSucceeded | ImageFailed | JobStatusChanged,
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyEvent)
_DICT: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])

# (type, schema_version) -> function upgrading the raw dict one version; none needed yet.
_UPCASTERS: dict[tuple[str, int], Any] = {}


def decode_event(raw: bytes) -> Any:
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
