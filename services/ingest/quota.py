"""Per-tenant quotas at the front door, pure (the clock is a parameter; no I/O).

- The submit rate (`TENANT_SUBMIT_RATE`, images per second): a token bucket holding one
  second's worth. A submit is accepted while the bucket is not in debt and then takes its
  images, so the bucket may go into debt by one job (a job larger than a second's worth is
  still possible, and then waits the debt out). Over any window of T seconds the images
  accepted never exceed rate*T + capacity + one job.
- The images pending (`TENANT_MAX_PENDING_IMAGES`): accepted and not yet final. The status view
  is the source of truth; this process keeps the last sum it read and the jobs IT accepted
  since that are not in the view yet. Their total never undercounts this process's own jobs,
  so one ingest process never lets a tenant past its limit. The view is read at most once per
  `REFRESH_EVERY_S` per tenant, while the tenant submits: a submit that does not fit by the
  estimate waits for that read; one that fits does not (the read runs beside it and keeps the
  sum fresh, so jobs other ingest processes accepted are seen within one interval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from uuid import UUID

REFRESH_EVERY_S = 0.2  # at most one read of the view per tenant per interval
PENDING_RETRY_AFTER_S = 5  # jobs finish at their own pace: a few seconds is a fair guess


@dataclass(frozen=True)
class Refusal:
    """Why a submit is refused (429): which quota, the tenant's numbers, when to retry."""

    quota: str  # "pending" or "rate"
    message: str
    retry_after_s: int


@dataclass
class TokenBucket:
    rate: float  # images per second; the capacity is one second's worth
    tokens: float  # below zero: in debt
    at: float  # the clock reading `tokens` is for

    @classmethod
    def full(cls, rate: float, now: float) -> TokenBucket:
        return cls(rate, rate, now)

    @property
    def capacity(self) -> float:
        return self.rate

    def refill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
            self.at = now

    def refusal(self, images: int, now: float) -> Refusal | None:
        """None when a submit may take its images now; else when the debt is paid off."""
        self.refill(now)
        if self.tokens >= 0:
            return None
        wait = max(1, math.ceil(-self.tokens / self.rate))
        return Refusal("rate", f"submit rate over {self.rate:g} images/s for this tenant"
                               f" (this job has {images}); retry in {wait} s", wait)

    def take(self, images: int) -> None:
        self.tokens -= images

    def give_back(self, images: int) -> None:
        """A submit that took its images was not accepted after all."""
        self.tokens = min(self.capacity, self.tokens + images)


@dataclass
class PendingImages:
    """One tenant's images accepted and not yet final, as this process knows them."""

    limit: int
    counted: int = 0  # the view's sum at the last read
    known: bool = False  # read at least once: until then `counted` means nothing (e.g. just started)
    read_started: float = -math.inf
    recent: dict[UUID, int] = field(default_factory=dict)  # accepted here since, not yet in the view

    def estimate(self) -> int:
        return self.counted + sum(self.recent.values())

    def fits(self, images: int) -> bool:
        return self.estimate() + images <= self.limit

    def surely_fits(self, images: int) -> bool:
        """Fits by a count that has been read: the decision need not wait for a read."""
        return self.known and self.fits(images)

    def read_due(self, now: float) -> bool:
        return now - self.read_started >= REFRESH_EVERY_S

    def reading(self, now: float) -> list[UUID]:
        """A read of the view starts now: the jobs to ask it about."""
        self.read_started = now
        return list(self.recent)

    def read(self, counted: int, in_view: set[UUID]) -> None:
        """The view's sum, and which of the jobs asked about it has folded (counted there now,
        or already final): those leave `recent`, so nothing is counted twice. Jobs accepted
        while the read ran were not asked about and stay."""
        self.counted, self.known = counted, True
        for job_id in in_view:
            self.recent.pop(job_id, None)

    def refusal(self, images: int) -> Refusal | None:
        if self.fits(images):
            return None
        if images > self.limit:
            return Refusal("pending", f"this job has {images} images, more than the tenant's limit of"
                                      f" {self.limit} pending images; split it", PENDING_RETRY_AFTER_S)
        return Refusal("pending", f"too many images pending for this tenant: {self.estimate()} pending,"
                                  f" this job has {images}, the limit is {self.limit}", PENDING_RETRY_AFTER_S)

    def reserve(self, job_id: UUID, images: int) -> None:
        self.recent[job_id] = images

    def release(self, job_id: UUID) -> None:
        self.recent.pop(job_id, None)


@dataclass
class TenantQuota:
    """Both quotas of one tenant (either may be off: None)."""

    bucket: TokenBucket | None
    pending: PendingImages | None

    def admit(self, job_id: UUID, images: int, now: float) -> Refusal | None:
        """Decide and, when accepted, take the tokens and reserve the images, in one step."""
        refused = (self.bucket and self.bucket.refusal(images, now)) or (self.pending and self.pending.refusal(images))
        if refused:
            return refused
        if self.bucket:
            self.bucket.take(images)
        if self.pending:
            self.pending.reserve(job_id, images)
        return None

    def release(self, job_id: UUID | None, images: int) -> None:
        """A submit that was admitted was not accepted after all: its tokens and, unless an
        earlier request holds that job (`job_id` None), its reservation go back."""
        if self.bucket:
            self.bucket.give_back(images)
        if self.pending and job_id is not None:
            self.pending.release(job_id)

    def move(self, reserved: UUID, published: UUID) -> bool:
        """An Idempotency-Key retry publishes the first request's job, not the id reserved for
        it. False when an earlier request already holds that job: its reservation stays."""
        if self.pending is None:
            return True
        images = self.pending.recent.pop(reserved, 0)
        if published in self.pending.recent:
            return False
        self.pending.recent[published] = images
        return True
