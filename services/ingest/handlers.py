"""Submitting a job: validate, refuse what cannot be stored, remember the Idempotency-Key,
publish, answer. A job is accepted (200) only after the broker acknowledged its event; with an
`Idempotency-Key`, a retry returns the same `job_id` and re-publishes the same event (the
consumers ignore repeats), so a submit whose acknowledgement was lost is never duplicated.

Dependencies are small Protocols (adapters/ has the real ones; the tests pass fakes)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol
from uuid import uuid4
from zoneinfo import ZoneInfo

from prometheus_client import Counter

from services.ingest.adapters.idempotency import KeyReused
from services.ingest.domain import InvalidSubmission, Limits, validate_submission
from shared.events import JobSubmitted, encode_event
from shared.http import RETRY_SHORTLY, Reply
from shared.kafka import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)
IMAGES_ACCEPTED = Counter("imagejobs_ingest_images_total", "Images in accepted jobs")
# an event must fit in one Kafka record, with room for the envelope
MAX_EVENT_BYTES = MAX_MESSAGE_BYTES - 64 * 1024


class KeyStore(Protocol):
    async def remember(self, key: str, owner: str | None, raw: bytes, event: JobSubmitted) -> JobSubmitted: ...


class Publisher(Protocol):
    def ready(self) -> bool: ...
    async def publish(self, job_id: str, payload: bytes) -> None: ...


class SubmitJob:
    def __init__(self, keys: KeyStore, publisher: Publisher, tz: ZoneInfo, limits: Limits,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.keys, self.publisher, self.tz, self.limits, self.clock = keys, publisher, tz, limits, clock

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
        return await self._publish(event, payload)

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

    async def _publish(self, event: JobSubmitted, payload: bytes) -> Reply:
        try:
            await self.publisher.publish(str(event.job_id), payload)
        except Exception:  # noqa: BLE001 - not acknowledged: not accepted
            log.warning("publishing job %s failed", event.job_id, exc_info=True)
            return Reply.error(503, "the job could not be stored; retry (with the same Idempotency-Key)",
                               RETRY_SHORTLY)
        IMAGES_ACCEPTED.inc(event.total_images)
        return Reply(200, {"job_id": str(event.job_id), "message": "Job scheduled for processing",
                           "scheduled_time": event.scheduled_time.astimezone(UTC).isoformat().replace("+00:00", "Z")})
