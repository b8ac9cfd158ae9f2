"""Submitting a job: validate, refuse what cannot be stored, remember the Idempotency-Key,
publish, answer. A job is accepted (200) only after the broker acknowledged its event; with an
`Idempotency-Key`, a retry returns the same `job_id` and re-publishes the same event (the
consumers ignore repeats), so a submit whose acknowledgement was lost is never duplicated.

A 503 is true: "not accepted, nothing will run". When the acknowledgement does not come in
time the record may still be written later (an idempotent producer retries it), so before
answering 503 the use case withdraws the job (shared/admissions.py); if the scheduler admitted
it first, the job is accepted after all and the answer is 200. While neither the broker nor
the database can tell, the request waits.

Dependencies are small Protocols (adapters/ has the real ones; the tests pass fakes)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

from prometheus_client import Counter

from services.ingest.adapters.idempotency import KeyReused
from services.ingest.domain import InvalidSubmission, Limits, validate_submission
from shared.events import JobSubmitted, encode_event
from shared.http import RETRY_SHORTLY, Reply
from shared.kafka import MAX_MESSAGE_BYTES
from shared.publishing import NotAcknowledged, NotQueued, withdraw_unless_admitted

log = logging.getLogger(__name__)
IMAGES_ACCEPTED = Counter("imagejobs_ingest_images_total", "Images in accepted jobs")
# an event must fit in one Kafka record, with room for the envelope
MAX_EVENT_BYTES = MAX_MESSAGE_BYTES - 64 * 1024


class KeyStore(Protocol):
    async def remember(self, key: str, owner: str | None, raw: bytes, event: JobSubmitted) -> JobSubmitted: ...


class Publisher(Protocol):
    def ready(self) -> bool: ...
    async def publish(self, job_id: str, payload: bytes) -> None:
        """Acknowledged in time; raises NotQueued (certainly not written) or NotAcknowledged."""


class Admissions(Protocol):
    async def withdraw(self, job_id: UUID, key: str | None, owner: str | None) -> bool: ...
    async def claim(self, job_id: UUID) -> bool: ...


class SubmitJob:
    def __init__(self, keys: KeyStore, publisher: Publisher, admissions: Admissions, tz: ZoneInfo, limits: Limits,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.keys, self.publisher, self.admissions = keys, publisher, admissions
        self.tz, self.limits, self.clock = tz, limits, clock

    async def __call__(self, raw: bytes, owner: str | None, idempotency_key: str | None) -> Reply:
        event = self._validated(raw, owner)
        if isinstance(event, Reply):
            return event
        payload = encode_event(event)
        if len(payload) > MAX_EVENT_BYTES:
            return Reply.error(413, "job too large to store as one event; split it into smaller jobs")
        if not self.publisher.ready():
            return Reply.error(503, "not connected to Kafka yet; retry shortly", RETRY_SHORTLY)
        if idempotency_key is not None:
            first = await self._first_of(idempotency_key, owner, raw, event)
            if isinstance(first, Reply):
                return first
            if first is not event:  # a retry: re-publish the event stored the first time
                event, payload = first, encode_event(first)
        return await self._publish(event, payload, idempotency_key, owner)

    def _validated(self, raw: bytes, owner: str | None) -> JobSubmitted | Reply:
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            return Reply.error(400, "body is not valid JSON")
        try:
            job = validate_submission(body, self.clock(), self.tz, self.limits)
        except InvalidSubmission as exc:
            return Reply.error(400, str(exc))
        except RecursionError:
            return Reply.error(400, "body is nested too deeply")
        return JobSubmitted(job_id=uuid4(), scheduled_time=job.scheduled_time, visits=job.visits, owner=owner)

    async def _first_of(self, key: str, owner: str | None, raw: bytes, event: JobSubmitted) -> JobSubmitted | Reply:
        try:
            return await self.keys.remember(key, owner, raw, event)
        except KeyReused:
            return Reply.error(409, "Idempotency-Key was used with a different body")
        except Exception:  # noqa: BLE001 - database down
            log.warning("idempotency store unavailable", exc_info=True)
            return Reply.error(503, "idempotency store unavailable; retry shortly", RETRY_SHORTLY)

    async def _publish(self, event: JobSubmitted, payload: bytes, key: str | None, owner: str | None) -> Reply:
        try:
            await self.publisher.publish(str(event.job_id), payload)
        except NotQueued as exc:
            log.warning("publishing job %s failed: %s", event.job_id, exc)
            return NOT_STORED
        except NotAcknowledged as late:
            if await self._withdrawn(event.job_id, key, owner, late.ack):
                log.warning("job %s was not acknowledged in time and is withdrawn", event.job_id)
                return NOT_STORED
        else:  # a retry with the same key may be withdrawing this very job: one of them wins
            if key is not None and not await self._claimed(event.job_id):
                return NOT_STORED
        IMAGES_ACCEPTED.inc(event.total_images)
        return Reply(200, {"job_id": str(event.job_id), "message": "Job scheduled for processing",
                           "scheduled_time": event.scheduled_time.astimezone(UTC).isoformat().replace("+00:00", "Z")})

    async def _withdrawn(self, job_id: UUID, key: str | None, owner: str | None, ack: asyncio.Future[Any]) -> bool:
        return await withdraw_unless_admitted(lambda: self.admissions.withdraw(job_id, key, owner), ack,
                                              f"job {job_id}")

    async def _claimed(self, job_id: UUID) -> bool:
        try:
            return await self.admissions.claim(job_id)
        except Exception:  # noqa: BLE001 - cannot tell: not accepted, the client retries with its key
            log.warning("cannot claim job %s", job_id, exc_info=True)
            return False


NOT_STORED = Reply.error(503, "the job was not accepted (nothing will run); retry, with the same Idempotency-Key",
                         RETRY_SHORTLY)
