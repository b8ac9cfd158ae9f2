"""The submit use case (services/ingest/handlers.py) in-process, with fakes for the key store
and the publisher: milliseconds, no Kafka, no database."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from services.ingest.adapters.idempotency import KeyReused
from services.ingest.domain import Limits
from services.ingest.handlers import SubmitJob
from shared.events import JobSubmitted, decode_event

NOW = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
JOB = {"count": 1, "visits": [{"store_id": "S1", "image_url": ["http://img.test/a.jpg"], "visit_time": "10:00"}]}


class FakePublisher:
    def __init__(self, ready: bool = True, fails: bool = False) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self._ready, self._fails = ready, fails

    def ready(self) -> bool:
        return self._ready

    async def publish(self, job_id: str, payload: bytes) -> None:
        if self._fails:
            raise TimeoutError("no acknowledgement")
        self.sent.append((job_id, payload))


class FakeKeys:
    def __init__(self) -> None:
        self.stored: dict[tuple[str, str | None], tuple[bytes, JobSubmitted]] = {}

    async def remember(self, key: str, owner: str | None, raw: bytes, event: JobSubmitted) -> JobSubmitted:
        first = self.stored.setdefault((key, owner), (raw, event))
        if first[0] != raw:
            raise KeyReused()
        return first[1]


def submit(raw: bytes, publisher: FakePublisher, keys: FakeKeys | None = None, key: str | None = None) -> object:
    use_case = SubmitJob(keys or FakeKeys(), publisher, ZoneInfo("Asia/Kolkata"), Limits(), clock=lambda: NOW)
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


def test_not_connected_or_not_acknowledged_is_503_and_not_accepted() -> None:
    assert submit(json.dumps(JOB).encode(), FakePublisher(ready=False)).status == 503  # type: ignore[attr-defined]
    failing = submit(json.dumps(JOB).encode(), FakePublisher(fails=True))
    assert failing.status == 503 and "Idempotency-Key" in failing.body["error"]  # type: ignore[attr-defined]


def test_a_retry_with_the_same_key_republishes_the_same_job() -> None:
    publisher, keys = FakePublisher(), FakeKeys()
    raw = json.dumps(JOB).encode()
    first, second = submit(raw, publisher, keys, "k1"), submit(raw, publisher, keys, "k1")
    assert first.body["job_id"] == second.body["job_id"]  # type: ignore[attr-defined]
    assert publisher.sent[0] == publisher.sent[1]
    reused = submit(json.dumps({**JOB, "scheduled_time": "2026-12-01T00:00:00Z"}).encode(), publisher, keys, "k1")
    assert reused.status == 409  # type: ignore[attr-defined]
