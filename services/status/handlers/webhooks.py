"""Completion webhooks: when a job with a `callback_url` is final, its status (the same JSON as
`GET /api/status/{id}`) is POSTed there, signed by the Standard Webhooks convention, until the
receiver answers 2xx or WEBHOOK_RETRY_FOR_S has passed since the job became final.

Why the status service sends them: it owns the view and the status body, and its fold is the
only writer of final statuses, so the delivery is created in the fold's own transaction
(adapters/view.py::refresh_status, an outbox): exactly once, atomically with the final status,
never missed, without another consumer of the status topic, and kept across any restart.

Delivery: every status process runs `WebhookDeliverer.run`, which claims due deliveries with a
lease (adapters/webhooks.py), so instances share the work and a process killed mid-attempt
leaves its rows to be claimed again when the lease runs out: at least once, with the same
`webhook-id` on every attempt. It is woken when a fold created deliveries and looks every
second; each delivery is sent in its own task, at most MAX_IN_FLIGHT at once, so a slow
receiver holds up only its own. Each attempt is recorded with what it got. A 2xx delivers; any
other answer, a timeout or a connection error is tried again after a backoff with full jitter;
an address the SSRF rules refuse fails at once, as an image URL does.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter, Gauge, Histogram
from standardwebhooks import Webhook

from services.status.domain import (
    DELIVERED,
    FAILED,
    PENDING,
    Caller,
    Decision,
    Due,
    JobNotFound,
    Sent,
    WebhookView,
)
from services.status.handlers.jobs import JobReader, full_status
from services.status.ports import Deliveries, ManyJobReads, Poster, WebhookLookup
from shared.api import JobStatus, WebhookAttempt, WebhookStatus
from shared.events import iso
from shared.waits import woken_within

log = logging.getLogger(__name__)
DELIVERIES = Counter("imagejobs_webhook_deliveries_total", "Webhook attempts by what followed them", ["outcome"])
OUTCOMES = {outcome: DELIVERIES.labels(outcome) for outcome in ("delivered", "retried", "failed")}
DELAY = Histogram("imagejobs_webhook_delay_seconds", "From a job's final status to its webhook delivered",
                  buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400))
PENDING_NOW = Gauge("imagejobs_webhook_pending", "Webhook deliveries not yet delivered or given up")
MAX_IN_FLIGHT = 128  # deliveries being attempted at once, per process (docs/architecture.md says why 128)
LOOK_EVERY_S = 1.0  # due deliveries are looked for at least this often
LEASE_MARGIN_S = 5.0  # a claim outlives the attempt's deadline by this much (reading, recording)
GAUGE_EVERY_S = 5.0
NO_JOB = "the job is not in the status view (being rebuilt?)"


@dataclass(frozen=True)
class RetryPolicy:
    retry_for_s: float
    base_s: float
    max_s: float


def backoff_s(attempts: int, base_s: float, max_s: float, rand: Callable[[], float] = random.random) -> float:
    """The wait before the next attempt after `attempts` failed ones: full jitter, a random
    fraction of min(max_s, base_s * 2^attempts), so receivers that fail together are not hit
    again together."""
    return min(max_s, base_s * 2.0 ** min(attempts, 64)) * rand()


def decide(sent: Sent, attempts: int, final_at: datetime, now: datetime, policy: RetryPolicy,
           rand: Callable[[], float] = random.random) -> Decision:
    """What follows an attempt (`attempts` made, this one included): delivered on a 2xx; failed
    at once when the address is refused, or once WEBHOOK_RETRY_FOR_S has passed since the job
    was final; else tried again after the backoff, the last time at that deadline."""
    if sent.delivered:
        return Decision(DELIVERED)
    give_up_at = final_at + timedelta(seconds=policy.retry_for_s)
    if sent.refused or now >= give_up_at:
        return Decision(FAILED)
    wait = timedelta(seconds=backoff_s(attempts, policy.base_s, policy.max_s, rand))
    return Decision(PENDING, min(now + wait, give_up_at))


def signed_headers(signer: Webhook, webhook_id: str, body: str, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers: `webhook-signature` is `v1,` + base64 HMAC-SHA256 of
    `id.timestamp.body` (standardwebhooks does the signing; a receiver verifies with it too)."""
    moment = datetime.fromtimestamp(int(at.timestamp()), UTC)  # whole seconds, as the header says
    return {"content-type": "application/json", "webhook-id": webhook_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": signer.sign(webhook_id, moment, body)}


def status_json(status: JobStatus) -> str:
    """The status as `GET /api/status/{id}` writes it (compact, UTF-8: shared.api.model_response)."""
    return status.model_dump_json()


class WebhookDeliverer:
    def __init__(self, deliveries: Deliveries, reads: ManyJobReads, poster: Poster, signer: Webhook,
                 policy: RetryPolicy, in_flight: int = MAX_IN_FLIGHT,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 rand: Callable[[], float] = random.random) -> None:
        self.deliveries, self.reads, self.poster, self.signer = deliveries, reads, poster, signer
        self.policy, self.in_flight, self.clock, self.rand = policy, in_flight, clock, rand
        self._wakeup = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        self._more_due = False

    def wake(self) -> None:
        """Deliveries were just created (the fold calls this): look now, not at the next tick."""
        self._wakeup.set()

    async def run(self) -> None:
        gauge_at = 0.0
        while True:
            await self._claim_and_send()
            if time.monotonic() >= gauge_at:
                gauge_at = time.monotonic() + GAUGE_EVERY_S
                await self._refresh_gauge()
            await woken_within(self._wakeup, LOOK_EVERY_S)
            self._wakeup.clear()

    async def stop(self) -> None:
        """Cancel the attempts under way: their leases run out and another claim sends them."""
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)

    async def _claim_and_send(self) -> None:
        free = self.in_flight - len(self._sending)
        if free <= 0:
            return
        try:
            claimed = await self.deliveries.claim(free, self.poster.timeout_s + LEASE_MARGIN_S)
        except Exception as exc:  # noqa: BLE001 - the database is down: the next tick tries again
            log.warning("claiming webhook deliveries failed: %s", exc)
            return
        self._more_due = len(claimed) == free  # a slot freed then looks again at once
        if not claimed:
            return
        try:  # every claimed job's status in one query (their errors too, when failed)
            bodies = {row.job_id: full_status(row, failures)
                      for row, failures in await self.reads.load_jobs([due.job_id for due in claimed])}
        except Exception as exc:  # noqa: BLE001 - not sent: claimed again when the leases run out
            log.warning("reading the statuses of %d webhooks failed: %s", len(claimed), exc)
            return
        for due in claimed:
            task = asyncio.create_task(self._deliver(due, bodies.get(due.job_id)))
            self._sending.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if self._more_due:
            self._wakeup.set()

    async def _deliver(self, due: Due, body: JobStatus | None) -> None:
        try:
            await self._attempt(due, body)
        except Exception as exc:  # noqa: BLE001 - not recorded: claimed again when its lease runs out
            log.warning("webhook %s to %s: %s: %s; tried again when its lease runs out",
                        due.webhook_id, due.url, type(exc).__name__, exc)

    async def _attempt(self, due: Due, body: JobStatus | None) -> None:
        """One attempt: the status read at the claim (serialized once, signed, sent), then
        recorded with what follows it."""
        at = self.clock()
        if body is None:
            sent = Sent(None, NO_JOB, 0)
        else:
            text = status_json(body)
            sent = await self.poster.post(due.url, text.encode(), signed_headers(self.signer, due.webhook_id, text, at))
        decision = decide(sent, due.attempts + 1, due.created_at, self.clock(), self.policy, self.rand)
        recorded = await self.deliveries.record(due, at, sent, decision)
        if recorded is None:
            return  # another instance recorded this delivery after our lease ran out
        OUTCOMES["retried" if decision.state == PENDING else decision.state].inc()
        if recorded.delay_s is not None:
            DELAY.observe(recorded.delay_s)
        if decision.state == FAILED:
            log.warning("webhook %s to %s failed after %d attempts: %s", due.webhook_id, due.url,
                        due.attempts + 1, sent.error)

    async def _refresh_gauge(self) -> None:
        try:
            PENDING_NOW.set(await self.deliveries.pending())
        except Exception as exc:  # noqa: BLE001 - the next refresh tries again
            log.warning("counting pending webhook deliveries failed: %s", exc)


NO_CALLBACK = "job has no callback_url (no webhook)"


class WebhookReader:
    """`GET /api/jobs/{id}/webhook`: the job's webhook and its attempts, for its owner."""

    def __init__(self, jobs: JobReader, deliveries: WebhookLookup) -> None:
        self.jobs, self.deliveries = jobs, deliveries

    async def webhook(self, raw_id: str, caller: Caller) -> WebhookStatus:
        found = await self.jobs.find(raw_id, caller)  # the status route's refusals
        seen = await self.deliveries.webhook_of(found.job_id)
        if seen is None:
            raise JobNotFound(NO_CALLBACK)
        return webhook_status(seen)


def webhook_status(seen: WebhookView) -> WebhookStatus:
    return WebhookStatus(url=seen.url, webhook_id=seen.webhook_id, state=seen.state,
                         attempts=[WebhookAttempt(**{**a, "at": iso(a["at"])}) for a in seen.attempts],
                         next_attempt_at=iso(seen.next_attempt_at) if seen.next_attempt_at else None,
                         delivered_at=iso(seen.delivered_at) if seen.delivered_at else None)
