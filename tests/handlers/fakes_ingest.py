"""In-memory fakes of the ingest ports (services/ingest/ports.py) for the handler tests."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from uuid import UUID

from services.ingest.domain import KeyReused
from shared.events import JobSubmitted
from shared.publishing import NotAcknowledged, NotQueued


class FakePublisher:
    """`fails`: "queue" (the producer never took it) or "late" (taken, no acknowledgement in time)."""

    def __init__(self, ready: bool = True, fails: str | None = None) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self._ready, self._fails = ready, fails

    def ready(self) -> bool:
        return self._ready

    async def publish(self, job_id: str, payload: bytes) -> None:
        if self._fails == "queue":
            raise NotQueued("no connection")
        self.sent.append((job_id, payload))
        if self._fails == "late":
            raise NotAcknowledged(asyncio.get_running_loop().create_future())


class FakeAdmissions:
    """The admissions table: the first to write an id decides it."""

    def __init__(self, admitted_first: set[UUID] | None = None) -> None:
        self.fate: dict[UUID, bool] = {job: True for job in admitted_first or ()}
        self.forgotten: list[tuple[UUID, str | None]] = []

    async def withdraw(self, job_id: UUID, key: str | None, owner: str | None) -> bool:
        withdrawn = not self.fate.setdefault(job_id, False)
        if withdrawn:
            self.forgotten.append((job_id, key))
        return withdrawn

    async def claim(self, job_id: UUID) -> bool:
        return self.fate.setdefault(job_id, True)


class FakeKeys:
    """The Idempotency-Key store; `down`: the database cannot be reached."""

    def __init__(self, down: bool = False) -> None:
        self.stored: dict[tuple[str, str | None], tuple[bytes, JobSubmitted]] = {}
        self.down = down

    async def remember(self, key: str, owner: str | None, raw: bytes, event: JobSubmitted) -> JobSubmitted:
        if self.down:
            raise OSError("database down")
        first = self.stored.setdefault((key, owner), (raw, event))
        if first[0] != raw:
            raise KeyReused()
        return first[1]


class FakeView:
    """The status view's pending sums; a read takes a moment (other submits run meanwhile)."""

    def __init__(self, fails: bool = False) -> None:
        self.counted: dict[str, int] = {}
        self.folded: set[UUID] = set()
        self.reads = 0
        self.landed = 0  # reads that have answered (or failed)
        self.fails = fails

    async def pending(self, owners: Collection[str] | None, recent: list[UUID]) -> tuple[int, set[UUID]]:
        self.reads += 1
        await asyncio.sleep(0.05)
        self.landed += 1
        if self.fails:
            raise OSError("database down")
        counted = sum(n for owner, n in self.counted.items() if owners is None or owner in owners)
        return counted, self.folded & set(recent)
