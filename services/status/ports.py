"""What the status use cases need from the outside world (handlers/ take these; adapters/
implement them; bootstrap.py plugs one into the other)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from services.status.domain import Decision, Due, JobRow, Recorded, Sent, WebhookView
from shared.events import JobCommand


class JobReads(Protocol):
    """One job of the view (its failed images come with `ManyJobReads.load_jobs`)."""

    async def load_job(self, job_id: UUID) -> JobRow | None: ...


class ManyJobReads(Protocol):
    """Many jobs in one query, each with its per-store failures when failed (absent: unknown)."""

    async def load_jobs(self, job_ids: list[UUID]) -> list[tuple[JobRow, list[Any] | None]]: ...


class CachedReads(Protocol):
    """One job of the view and, when failed, its failed images (None: not in the view), from
    memory when that is safe (handlers/read_cache.py::ReadCache)."""

    async def find(self, job_id: UUID) -> tuple[JobRow, list[Any] | None] | None: ...
    def changed(self, job_ids: Iterable[UUID]) -> None: ...


class FoldProgress(Protocol):
    """How far the fold has read each partition of the jobs topic."""

    async def folded_offsets(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]: ...


class JobPages(Protocol):
    """The pages a client walks: a tenant's jobs, a job's per-image results."""

    async def list_jobs(self, owners: list[str], keys_on: bool, status: str | None, limit: int,
                        after: tuple[datetime, UUID] | None) -> list[tuple[JobRow, datetime]]: ...
    async def results_page(self, job_id: UUID, limit: int, offset: int) -> list[dict[str, Any]]: ...


class ViewReads(JobReads, ManyJobReads, FoldProgress, JobPages, Protocol):
    """Everything a status read needs of the view (adapters/view.py::ViewReader)."""


class PartitionEnds(Protocol):
    """Each job's partition of the jobs topic and that partition's end offset now."""

    async def __call__(self, job_ids: list[UUID]) -> dict[UUID, tuple[str, int, int]]: ...


class DecisionReads(Protocol):
    """command_id -> (accepted, state) of the commands whose decision has been folded."""

    async def decisions(self, command_ids: list[UUID]) -> dict[UUID, tuple[bool, str]]: ...


class CommandBus(Protocol):
    async def __call__(self, command: JobCommand) -> None:
        """Publish the command, acknowledged (raises NotAccepted when it will never be decided)."""


class Deliveries(Protocol):
    """The webhook deliveries to send (adapters/webhooks.py::WebhookStore)."""

    async def claim(self, limit: int, lease_s: float) -> list[Due]: ...
    async def record(self, due: Due, at: datetime, sent: Sent, decision: Decision) -> Recorded | None: ...
    async def pending(self) -> int: ...


class WebhookLookup(Protocol):
    """A job's webhook and its attempts, as its owner sees them (None: no callback_url)."""

    async def webhook_of(self, job_id: UUID) -> WebhookView | None: ...


class Poster(Protocol):
    """Sends one webhook attempt (adapters/webhooks.py::WebhookSender)."""

    timeout_s: float

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Sent: ...


class PendingImages(Protocol):
    """(owner, images accepted and not yet final) of every owner with open jobs."""

    async def __call__(self) -> list[tuple[str | None, int]]: ...
