"""Submitting a job: validate, refuse what cannot be stored, remember the Idempotency-Key,
publish, answer. A job is accepted only after the broker acknowledged its event; with an
`Idempotency-Key`, a retry returns the same `job_id` and re-publishes the same event (the
consumers ignore repeats), so a submit whose acknowledgement was lost is never duplicated.

`NotAccepted` (a 503) is true: "not accepted, nothing will run". When the acknowledgement does
not come in time the record may still be written later (an idempotent producer retries it), so
before raising it the use case withdraws the job (shared/admissions.py); if the scheduler
admitted it first, the job is accepted after all. While neither the broker nor the database can
tell, the request waits.

Between validation and publishing, the tenant's quotas (TENANT_SUBMIT_RATE,
TENANT_MAX_PENDING_IMAGES) are checked and the job's images reserved; a submit over either
raises `OverQuota` (a 429 with `Retry-After`) and publishes nothing, and a reservation is given
back when the job is not accepted after all (services/ingest/quota.py has the rules).

The use case takes its ports (services/ingest/ports.py) as parameters, returns the `Accepted`
answer of the API contract or raises the errors of services/ingest/domain.py; app.py answers
them over HTTP."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from prometheus_client import Counter

from services.ingest.domain import JobTooLarge, KeyReused, NotAccepted, OverQuota, job_submitted
from services.ingest.ports import Admissions, KeyStore, PendingReads, Publisher, Quotas
from services.ingest.quota import PendingImages, TenantQuota, TokenBucket
from shared.api import Accepted, Deployment, Limits
from shared.events import JobSubmitted, encode_event, iso
from shared.kafka import MAX_MESSAGE_BYTES
from shared.metrics import tenant_label
from shared.publishing import NotAcknowledged, NotQueued, withdraw_unless_admitted

log = logging.getLogger(__name__)
IMAGES_ACCEPTED = Counter("imagejobs_ingest_images_total", "Images in accepted jobs")
REJECTED = Counter("imagejobs_ingest_rejected_total", "Submits refused by a tenant quota (429)", ["tenant", "quota"])
# an event must fit in one Kafka record, with room for the envelope
MAX_EVENT_BYTES = MAX_MESSAGE_BYTES - 64 * 1024
NOT_STORED = "the job was not accepted (nothing will run); retry, with the same Idempotency-Key"


class SubmitJob:
    def __init__(self, keys: KeyStore, publisher: Publisher, admissions: Admissions, tz: ZoneInfo, limits: Limits,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), quotas: Quotas | None = None) -> None:
        self.keys, self.publisher, self.admissions = keys, publisher, admissions
        self.tz, self.limits, self.clock = tz, limits, clock
        self.quotas: Quotas = quotas or NoQuotas()

    async def __call__(self, raw: bytes, owner: str | None, idempotency_key: str | None) -> Accepted:
        """Raises InvalidInput, JobTooLarge, OverQuota, KeyReused or NotAccepted."""
        event = job_submitted(raw, owner, Deployment(self.limits, self.tz, self.clock()))
        payload = encode_event(event)
        if len(payload) > MAX_EVENT_BYTES:
            raise JobTooLarge("job too large to store as one event; split it into smaller jobs")
        if not self.publisher.ready():
            raise NotAccepted("not connected to Kafka yet; retry shortly")
        await self.quotas.reserve(owner, event.job_id, event.total_images)
        reserved: UUID | None = event.job_id  # the job whose reservation this request holds
        try:
            if idempotency_key is not None:
                first = await self._first_of(idempotency_key, owner, raw, event)
                if first is not event:  # a retry: re-publish the event stored the first time
                    moved = self.quotas.move(owner, event.job_id, first.job_id)
                    reserved = first.job_id if moved else None  # None: an earlier request holds it
                    event, payload = first, encode_event(first)
            await self._publish(event, payload, idempotency_key, owner)
        except BaseException:  # not accepted, a bug or a shutdown: the reservation goes back
            self.quotas.release(owner, reserved, event.total_images)
            raise
        IMAGES_ACCEPTED.inc(event.total_images)
        return Accepted(job_id=str(event.job_id), scheduled_time=iso(event.scheduled_time))

    async def _first_of(self, key: str, owner: str | None, raw: bytes, event: JobSubmitted) -> JobSubmitted:
        try:
            return await self.keys.remember(key, owner, raw, event)
        except KeyReused:
            raise
        except Exception:  # noqa: BLE001 - database down
            log.warning("idempotency store unavailable", exc_info=True)
            raise NotAccepted("idempotency store unavailable; retry shortly") from None

    async def _publish(self, event: JobSubmitted, payload: bytes, key: str | None, owner: str | None) -> None:
        """Returns once the job is accepted; NotAccepted when it is not (and will never run)."""
        try:
            await self.publisher.publish(str(event.job_id), payload)
        except NotQueued as exc:
            log.warning("publishing job %s failed: %s", event.job_id, exc)
            raise NotAccepted(NOT_STORED) from None
        except NotAcknowledged as late:
            if await self._withdrawn(event.job_id, key, owner, late.ack):
                log.warning("job %s was not acknowledged in time and is withdrawn", event.job_id)
                raise NotAccepted(NOT_STORED) from None
        else:  # a retry with the same key may be withdrawing this very job: one of them wins
            if key is not None and not await self._claimed(event.job_id):
                raise NotAccepted(NOT_STORED)

    async def _withdrawn(self, job_id: UUID, key: str | None, owner: str | None, ack: asyncio.Future[Any]) -> bool:
        return await withdraw_unless_admitted(lambda: self.admissions.withdraw(job_id, key, owner), ack,
                                              f"job {job_id}")

    async def _claimed(self, job_id: UUID) -> bool:
        try:
            return await self.admissions.claim(job_id)
        except Exception:  # noqa: BLE001 - cannot tell: not accepted, the client retries with its key
            log.warning("cannot claim job %s", job_id, exc_info=True)
            return False


class NoQuotas:
    """TENANT_MAX_PENDING_IMAGES=0 and no TENANT_SUBMIT_RATE: every submit is admitted."""

    async def reserve(self, tenant: str | None, job_id: UUID, images: int) -> None:
        pass

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

    async def reserve(self, tenant: str | None, job_id: UUID, images: int) -> None:
        """Admitted and reserved; else OverQuota, or NotAccepted when the view cannot be read."""
        quota = self._quota(tenant)
        async with self._locks.setdefault(tenant, asyncio.Lock()):
            if quota.pending is not None and not await self._fresh_enough(tenant, quota.pending, images):
                raise NotAccepted("cannot check the tenant's pending images; retry shortly")
            refused = quota.admit(job_id, images, self.clock())
        if refused is not None:
            REJECTED.labels(tenant_label(tenant), refused.quota).inc()
            raise OverQuota(refused)

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
