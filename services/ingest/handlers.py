"""Submitting a job: validate, refuse what cannot be stored, remember the Idempotency-Key,
publish, answer. A job is accepted (200) only after the broker acknowledged its event; with an
`Idempotency-Key`, a retry returns the same `job_id` and re-publishes the same event (the
consumers ignore repeats), so a submit whose acknowledgement was lost is never duplicated.

A 503 is true: "not accepted, nothing will run". When the acknowledgement does not come in
time the record may still be written later (an idempotent producer retries it), so before
answering 503 the use case withdraws the job (shared/admissions.py); if the scheduler admitted
it first, the job is accepted after all and the answer is 200. While neither the broker nor
the database can tell, the request waits.

Between validation and publishing, the tenant's quotas (TENANT_SUBMIT_RATE,
TENANT_MAX_PENDING_IMAGES) are checked and the job's images reserved; a submit over either is
answered 429 with `Retry-After` and publishes nothing, and a reservation is given back when the
job is not accepted after all (services/ingest/quota.py has the rules).

Dependencies are small Protocols (adapters/ has the real ones; the tests pass fakes)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

from prometheus_client import Counter

from services.ingest.adapters.idempotency import KeyReused
from services.ingest.domain import InvalidSubmission, Limits, validate_submission
from services.ingest.quota import PendingImages, TenantQuota, TokenBucket
from shared.events import JobSubmitted, encode_event
from shared.http import RETRY_SHORTLY, Reply
from shared.kafka import MAX_MESSAGE_BYTES
from shared.metrics import tenant_label
from shared.publishing import NotAcknowledged, NotQueued, withdraw_unless_admitted

log = logging.getLogger(__name__)
IMAGES_ACCEPTED = Counter("imagejobs_ingest_images_total", "Images in accepted jobs")
REJECTED = Counter("imagejobs_ingest_rejected_total", "Submits refused by a tenant quota (429)", ["tenant", "quota"])
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


class Quotas(Protocol):
    async def reserve(self, tenant: str | None, job_id: UUID, images: int) -> Reply | None:
        """None: admitted and reserved; else the 429 (or 503) to answer."""
    def release(self, tenant: str | None, job_id: UUID | None, images: int) -> None: ...
    def move(self, tenant: str | None, reserved: UUID, published: UUID) -> bool: ...


class SubmitJob:
    def __init__(self, keys: KeyStore, publisher: Publisher, admissions: Admissions, tz: ZoneInfo, limits: Limits,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), quotas: Quotas | None = None) -> None:
        self.keys, self.publisher, self.admissions = keys, publisher, admissions
        self.tz, self.limits, self.clock = tz, limits, clock
        self.quotas: Quotas = quotas or NoQuotas()

    async def __call__(self, raw: bytes, owner: str | None, idempotency_key: str | None) -> Reply:
        event = self._validated(raw, owner)
        if isinstance(event, Reply):
            return event
        payload = encode_event(event)
        if len(payload) > MAX_EVENT_BYTES:
            return Reply.error(413, "job too large to store as one event; split it into smaller jobs")
        if not self.publisher.ready():
            return Reply.error(503, "not connected to Kafka yet; retry shortly", RETRY_SHORTLY)
        refused = await self.quotas.reserve(owner, event.job_id, event.total_images)
        if refused is not None:
            return refused
        try:
            reply, reserved = await self._stored_and_published(raw, event, payload, idempotency_key, owner)
        except BaseException:  # a bug or a shutdown: a reservation nobody publishes would never be freed
            self.quotas.release(owner, event.job_id, event.total_images)
            raise
        if reply.status != 200:
            self.quotas.release(owner, reserved, event.total_images)
        return reply

    async def _stored_and_published(self, raw: bytes, event: JobSubmitted, payload: bytes, key: str | None,
                                    owner: str | None) -> tuple[Reply, UUID | None]:
        """The answer, and the job whose reservation this request holds (None: an earlier
        request with the same Idempotency-Key holds it)."""
        reserved: UUID | None = event.job_id
        if key is not None:
            first = await self._first_of(key, owner, raw, event)
            if isinstance(first, Reply):
                return first, reserved
            if first is not event:  # a retry: re-publish the event stored the first time
                reserved = first.job_id if self.quotas.move(owner, event.job_id, first.job_id) else None
                event, payload = first, encode_event(first)
        return await self._publish(event, payload, key, owner), reserved

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
        return JobSubmitted(job_id=uuid4(), scheduled_time=job.scheduled_time, visits=job.visits, owner=owner,
                            priority=job.priority, callback_url=job.callback_url)

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


class PendingReads(Protocol):
    async def pending(self, owners: Collection[str] | None, recent: list[UUID]) -> tuple[int, set[UUID]]:
        """(images pending over `owners`' jobs (None: every job), which of `recent` the view has)."""


class NoQuotas:
    """TENANT_MAX_PENDING_IMAGES=0 and no TENANT_SUBMIT_RATE: every submit is admitted."""

    async def reserve(self, tenant: str | None, job_id: UUID, images: int) -> Reply | None:
        return None

    def release(self, tenant: str | None, job_id: UUID | None, images: int) -> None:
        pass

    def move(self, tenant: str | None, reserved: UUID, published: UUID) -> bool:
        return True


class TenantQuotas:
    """Every tenant's quotas in this process. The decision and the reservation happen with no
    await between them under the tenant's lock, so parallel submits of one tenant never
    overshoot. The view is read at most once per interval per tenant, one read at a time: a
    submit that does not fit by the estimate waits for the read under the lock (and every
    submit behind it uses that read); one that fits lets it run beside it. Tenants are the
    configured ones (or None), so these maps stay small."""

    READ_TIMEOUT_S = 1.0

    def __init__(self, reads: PendingReads, max_pending: int, rate: float,
                 owners_of: Callable[[str], Collection[str]] = lambda tenant: (tenant,),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.reads, self.max_pending, self.rate = reads, max_pending, rate
        self.owners_of, self.clock = owners_of, clock
        self._tenants: dict[str | None, TenantQuota] = {}
        self._locks: dict[str | None, asyncio.Lock] = {}
        self._reading: dict[str | None, asyncio.Task[bool]] = {}
        self._failing: set[str | None] = set()

    async def reserve(self, tenant: str | None, job_id: UUID, images: int) -> Reply | None:
        quota = self._quota(tenant)
        async with self._locks.setdefault(tenant, asyncio.Lock()):
            if quota.pending is not None and not await self._fresh_enough(tenant, quota.pending, images):
                return Reply.error(503, "cannot check the tenant's pending images; retry shortly", RETRY_SHORTLY)
            refused = quota.admit(job_id, images, self.clock())
        if refused is None:
            return None
        REJECTED.labels(tenant_label(tenant), refused.quota).inc()
        return Reply.error(429, refused.message, {"Retry-After": str(refused.retry_after_s)})

    def release(self, tenant: str | None, job_id: UUID | None, images: int) -> None:
        self._quota(tenant).release(job_id, images)

    def move(self, tenant: str | None, reserved: UUID, published: UUID) -> bool:
        return self._quota(tenant).move(reserved, published)

    def _quota(self, tenant: str | None) -> TenantQuota:
        if tenant not in self._tenants:
            bucket = TokenBucket.full(self.rate, self.clock()) if self.rate > 0 else None
            pending = PendingImages(self.max_pending) if self.max_pending > 0 else None
            self._tenants[tenant] = TenantQuota(bucket, pending)
        return self._tenants[tenant]

    async def _fresh_enough(self, tenant: str | None, pending: PendingImages, images: int) -> bool:
        """Start the read when it is due; wait for a read in flight only when the job does not
        surely fit (by the estimate, once the view has been read at all). False: the job may not
        fit and the view could not be read."""
        reading = self._reading.get(tenant)
        if (reading is None or reading.done()) and pending.read_due(self.clock()):
            reading = self._reading[tenant] = asyncio.create_task(self._read(tenant, pending))
        if pending.surely_fits(images) or reading is None or reading.done() and reading.result():
            return True
        # shielded: a client that gives up must not cancel the read the others wait for
        return await asyncio.shield(reading) or pending.surely_fits(images)

    async def _read(self, tenant: str | None, pending: PendingImages) -> bool:
        """Read the tenant's pending images from the view; False (logged once) if it cannot."""
        owners = None if tenant is None else self.owners_of(tenant)
        try:
            async with asyncio.timeout(self.READ_TIMEOUT_S):
                counted, in_view = await self.reads.pending(owners, pending.reading(self.clock()))
        except Exception as exc:  # noqa: BLE001 - database down: decided on the estimate
            if tenant not in self._failing:
                log.warning("reading a tenant's pending images failed (%s); deciding on this process's count", exc)
            self._failing.add(tenant)
            return False
        self._failing.discard(tenant)
        pending.read(counted, in_view)
        return True


def quotas_for(reads: PendingReads, max_pending: int, rate: float,
               owners_of: Callable[[str], Collection[str]]) -> Quotas:
    """The quotas the settings ask for; none at all when both are off."""
    if max_pending <= 0 and rate <= 0:
        return NoQuotas()
    return TenantQuotas(reads, max_pending, rate, owners_of)
