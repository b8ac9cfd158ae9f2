"""The submit use case (services/ingest/handlers.py) in-process, with fakes for the key store
and the publisher: milliseconds, no Kafka, no database."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from uuid import UUID
from zoneinfo import ZoneInfo

from services.ingest.adapters.idempotency import KeyReused
from services.ingest.domain import Limits
from services.ingest.handlers import SubmitJob
from shared.events import JobSubmitted, decode_event
from shared.publishing import NotAcknowledged, NotQueued

NOW = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
JOB = {"count": 1, "visits": [{"store_id": "S1", "image_url": ["http://img.test/a.jpg"], "visit_time": "10:00"}]}


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
    def __init__(self) -> None:
        self.stored: dict[tuple[str, str | None], tuple[bytes, JobSubmitted]] = {}

    async def remember(self, key: str, owner: str | None, raw: bytes, event: JobSubmitted) -> JobSubmitted:
        first = self.stored.setdefault((key, owner), (raw, event))
        if first[0] != raw:
            raise KeyReused()
        return first[1]


def submit(raw: bytes, publisher: FakePublisher, keys: FakeKeys | None = None, key: str | None = None,
           admissions: FakeAdmissions | None = None) -> object:
    use_case = SubmitJob(keys or FakeKeys(), publisher, admissions or FakeAdmissions(), ZoneInfo("Asia/Kolkata"),
                         Limits(), clock=lambda: NOW)
    return asyncio.run(use_case(raw, "owner-hash", key))


def test_a_valid_job_is_published_once_and_answered_with_its_id() -> None:
    publisher = FakePublisher()
    reply = submit(json.dumps(JOB).encode(), publisher)
    assert reply.status == 200 and reply.body["scheduled_time"] == "2026-11-30T03:00:00Z"  # type: ignore[attr-defined]
    [(job_id, payload)] = publisher.sent
    event = decode_event(payload)
    assert str(event.job_id) == job_id == reply.body["job_id"] and event.owner == "owner-hash"  # type: ignore[attr-defined]


def test_bad_input_publishes_nothing() -> None:
    publisher = FakePublisher()
    for raw in (b"{", b"[]", json.dumps({**JOB, "count": 2}).encode()):
        reply = submit(raw, publisher)
        assert reply.status == 400 and list(reply.body) == ["error"]  # type: ignore[attr-defined]
    assert publisher.sent == []


def test_not_connected_or_not_queued_is_503_and_not_accepted() -> None:
    assert submit(json.dumps(JOB).encode(), FakePublisher(ready=False)).status == 503  # type: ignore[attr-defined]
    failing = submit(json.dumps(JOB).encode(), FakePublisher(fails="queue"))
    assert failing.status == 503 and "Idempotency-Key" in failing.body["error"]  # type: ignore[attr-defined]


def test_a_late_job_is_withdrawn_before_its_503_and_its_key_forgotten() -> None:
    admissions = FakeAdmissions()
    reply = submit(json.dumps(JOB).encode(), FakePublisher(fails="late"), FakeKeys(), "k1", admissions)
    assert reply.status == 503  # type: ignore[attr-defined]
    [(job_id, key)] = admissions.forgotten
    assert admissions.fate[job_id] is False and key == "k1"


def test_a_late_job_the_scheduler_admitted_first_is_accepted() -> None:
    publisher = FakePublisher(fails="late")

    class AdmittedFirst(FakeAdmissions):
        async def withdraw(self, job_id: UUID, key: str | None, owner: str | None) -> bool:
            self.fate[job_id] = True  # the scheduler wrote it first
            return await super().withdraw(job_id, key, owner)
    reply = submit(json.dumps(JOB).encode(), publisher, admissions=AdmittedFirst())
    assert reply.status == 200 and reply.body["job_id"] == publisher.sent[0][0]  # type: ignore[attr-defined]


def test_an_acknowledged_keyed_job_withdrawn_by_a_concurrent_retry_is_not_accepted() -> None:
    publisher, keys = FakePublisher(), FakeKeys()
    raw = json.dumps(JOB).encode()
    first = submit(raw, publisher, keys, "k1")
    job_id = UUID(first.body["job_id"])  # type: ignore[attr-defined]
    reply = submit(raw, publisher, keys, "k1", _withdrawn(job_id))
    assert reply.status == 503  # type: ignore[attr-defined]


def _withdrawn(job_id: UUID) -> FakeAdmissions:
    admissions = FakeAdmissions()
    admissions.fate[job_id] = False
    return admissions


def test_a_retry_with_the_same_key_republishes_the_same_job() -> None:
    publisher, keys = FakePublisher(), FakeKeys()
    raw = json.dumps(JOB).encode()
    first, second = submit(raw, publisher, keys, "k1"), submit(raw, publisher, keys, "k1")
    assert first.body["job_id"] == second.body["job_id"]  # type: ignore[attr-defined]
    assert publisher.sent[0] == publisher.sent[1]
    reused = submit(json.dumps({**JOB, "scheduled_time": "2026-12-01T00:00:00Z"}).encode(), publisher, keys, "k1")
    assert reused.status == 409  # type: ignore[attr-defined]
