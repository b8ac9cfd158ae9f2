"""The submit use case (services/ingest/handlers.py) in-process, with in-memory fakes of its
ports (tests/handlers/fakes_ingest.py): milliseconds, no Kafka, no database."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest

from services.ingest.domain import JobTooLarge, KeyReused, NotAccepted
from services.ingest.handlers import MAX_EVENT_BYTES, SubmitJob
from shared.api import Accepted, Limits
from shared.events import decode_event
from shared.schedule_time import InvalidInput
from tests.handlers.fakes_ingest import FakeAdmissions, FakeKeys, FakePublisher

NOW = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
JOB = {"count": 1, "visits": [{"store_id": "S1", "image_url": ["http://img.test/a.jpg"], "visit_time": "10:00"}]}
RAW = json.dumps(JOB).encode()


def submit(raw: bytes, publisher: FakePublisher, keys: FakeKeys | None = None, key: str | None = None,
           admissions: FakeAdmissions | None = None) -> Accepted:
    use_case = SubmitJob(keys or FakeKeys(), publisher, admissions or FakeAdmissions(), ZoneInfo("Asia/Kolkata"),
                         Limits(), clock=lambda: NOW)
    return asyncio.run(use_case(raw, "owner-hash", key))


def test_a_valid_job_is_published_once_and_answered_with_its_id() -> None:
    publisher = FakePublisher()
    accepted = submit(RAW, publisher)
    assert accepted.scheduled_time == "2026-11-30T03:00:00Z" and accepted.message == "Job scheduled for processing"
    [(job_id, payload)] = publisher.sent
    event = decode_event(payload)
    assert str(event.job_id) == job_id == accepted.job_id and event.owner == "owner-hash"


def test_bad_input_publishes_nothing() -> None:
    publisher = FakePublisher()
    mismatch = json.dumps({**JOB, "count": 2}).encode()
    for raw, message in ((b"{", "body is not valid JSON"), (b"[]", "body must be a JSON object"),
                         (mismatch, "count: 2 does not match the number of visits (1)")):
        with pytest.raises(InvalidInput) as refused:
            submit(raw, publisher)
        assert str(refused.value) == message
    assert publisher.sent == []


def test_a_job_too_large_for_one_event_is_refused_unpublished() -> None:
    publisher = FakePublisher()
    urls = [f"http://img.test/{'a' * 2000}/{i}.jpg" for i in range(MAX_EVENT_BYTES // 2000 + 1)]
    big = {"count": 1, "visits": [{"store_id": "S1", "image_url": urls, "visit_time": "10:00"}]}
    with pytest.raises(JobTooLarge, match="split it"):
        submit(json.dumps(big).encode(), publisher)
    assert publisher.sent == []


def test_not_connected_or_not_queued_is_not_accepted() -> None:
    with pytest.raises(NotAccepted, match="not connected to Kafka"):
        submit(RAW, FakePublisher(ready=False))
    with pytest.raises(NotAccepted, match="Idempotency-Key"):
        submit(RAW, FakePublisher(fails="queue"))


def test_an_idempotency_store_down_is_not_accepted_and_publishes_nothing() -> None:
    publisher = FakePublisher()
    with pytest.raises(NotAccepted, match="idempotency store unavailable"):
        submit(RAW, publisher, FakeKeys(down=True), "k1")
    assert publisher.sent == []


def test_a_late_job_is_withdrawn_before_it_is_not_accepted_and_its_key_forgotten() -> None:
    admissions = FakeAdmissions()
    with pytest.raises(NotAccepted):
        submit(RAW, FakePublisher(fails="late"), FakeKeys(), "k1", admissions)
    [(job_id, key)] = admissions.forgotten
    assert admissions.fate[job_id] is False and key == "k1"


def test_a_late_job_the_scheduler_admitted_first_is_accepted() -> None:
    publisher = FakePublisher(fails="late")

    class AdmittedFirst(FakeAdmissions):
        async def withdraw(self, job_id: UUID, key: str | None, owner: str | None) -> bool:
            self.fate[job_id] = True  # the scheduler wrote it first
            return await super().withdraw(job_id, key, owner)
    accepted = submit(RAW, publisher, admissions=AdmittedFirst())
    assert accepted.job_id == publisher.sent[0][0]


def test_an_acknowledged_keyed_job_withdrawn_by_a_concurrent_retry_is_not_accepted() -> None:
    publisher, keys = FakePublisher(), FakeKeys()
    first = submit(RAW, publisher, keys, "k1")
    with pytest.raises(NotAccepted):
        submit(RAW, publisher, keys, "k1", _withdrawn(UUID(first.job_id)))


def _withdrawn(job_id: UUID) -> FakeAdmissions:
    admissions = FakeAdmissions()
    admissions.fate[job_id] = False
    return admissions


def test_a_retry_with_the_same_key_republishes_the_same_job() -> None:
    publisher, keys = FakePublisher(), FakeKeys()
    first, second = submit(RAW, publisher, keys, "k1"), submit(RAW, publisher, keys, "k1")
    assert first.job_id == second.job_id
    assert publisher.sent[0] == publisher.sent[1]
    with pytest.raises(KeyReused):
        submit(json.dumps({**JOB, "scheduled_time": "2026-12-01T00:00:00Z"}).encode(), publisher, keys, "k1")
    assert len(publisher.sent) == 2
