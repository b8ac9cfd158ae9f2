"""What the submit use case needs from the outside world (adapters/ has the real ones;
tests/handlers/fakes_ingest.py has in-memory fakes)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol
from uuid import UUID

from shared.events import JobSubmitted


class KeyStore(Protocol):
    """`Idempotency-Key` -> the job it created."""

    async def remember(self, key: str, owner: str | None, raw: bytes, event: JobSubmitted) -> JobSubmitted:
        """Store key -> event and return it, or return the event first stored under this key;
        KeyReused (services/ingest/domain.py) if that first request had another body."""


class Publisher(Protocol):
    """The jobs topic."""

    def ready(self) -> bool:
        """Connected to the broker (a submit before then is not accepted)."""

    async def publish(self, job_id: str, payload: bytes) -> None:
        """Acknowledged in time; raises NotQueued (certainly not written) or NotAcknowledged
        (shared/publishing.py)."""


class Admissions(Protocol):
    """Who decides a late job's fate first: ingest withdrawing it or the scheduler admitting it
    (shared/admissions.py)."""

    async def withdraw(self, job_id: UUID, key: str | None, owner: str | None) -> bool:
        """True: withdrawn (it never runs; its key is forgotten); False: admitted first."""

    async def claim(self, job_id: UUID) -> bool:
        """The job is acknowledged: True unless a concurrent retry withdrew it first."""


class Quotas(Protocol):
    """The tenants' quotas at the front door (services/ingest/handlers.py: TenantQuotas)."""

    async def reserve(self, tenant: str | None, job_id: UUID, images: int) -> None:
        """Admitted and reserved; else OverQuota, or NotAccepted when it cannot tell."""

    def release(self, tenant: str | None, job_id: UUID | None, images: int) -> None:
        """A reserved job was not accepted after all (`job_id` None: an earlier request holds it)."""

    def move(self, tenant: str | None, reserved: UUID, published: UUID) -> bool:
        """An Idempotency-Key retry publishes `published`: False when an earlier request holds it."""


class PendingReads(Protocol):
    """The status view's images pending, the source of truth of the pending-images quota."""

    async def pending(self, owners: Collection[str] | None, recent: list[UUID]) -> tuple[int, set[UUID]]:
        """(images pending over `owners`' jobs (None: every job), which of `recent` the view has)."""
