"""The webhook delivery loop (services/status/handlers/webhooks.py) in-process: a fake
deliveries table, a fake view, a fake receiver; no database, no HTTP. What is sent (the status
body, signed), what is recorded after each answer, and that a slow receiver holds up only its
own delivery."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from standardwebhooks import Webhook

from services.status.domain import DELIVERED, FAILED, PENDING, Decision, Due, JobRow, Recorded, Sent, WebhookView
from services.status.handlers.webhooks import RetryPolicy, WebhookDeliverer
from shared.webhooks import webhook_id_for
from tests.support.waiting import until

SECRET = "whsec_" + base64.b64encode(bytes(range(40))).decode()
WHEN = datetime(2026, 12, 6, 5, 27, tzinfo=UTC)


class FakeTable:
    """webhook_deliveries: `claim` hands out due rows once (a lease that never runs out here)."""

    def __init__(self) -> None:
        self.due: list[Due] = []
        self.recorded: list[tuple[Due, Sent, Decision]] = []

    def add(self, job_id: UUID, url: str) -> None:
        self.due.append(Due(job_id, webhook_id_for(job_id), url, 0, datetime.now(UTC)))

    async def claim(self, limit: int, lease_s: float) -> list[Due]:
        taken, self.due = self.due[:limit], self.due[limit:]
        return taken

    async def record(self, due: Due, at: datetime, sent: Sent, decision: Decision) -> Recorded | None:
        self.recorded.append((due, sent, decision))
        if decision.state == PENDING:  # due again (the fake does not wait for next_attempt_at)
            self.due.append(Due(due.job_id, due.webhook_id, due.url, due.attempts + 1, due.created_at))
        return Recorded(0.01 if decision.state == DELIVERED else None)

    async def pending(self) -> int:
        return len(self.due)

    async def webhook_of(self, job_id: UUID) -> WebhookView | None:
        return None


class FakeView:
    def __init__(self) -> None:
        self.jobs: dict[UUID, JobRow] = {}

    def add(self, status: str) -> UUID:
        job_id = uuid4()
        self.jobs[job_id] = JobRow(job_id, status, WHEN, 2, 2 if status == "completed" else 1,
                                   1 if status == "failed" else 0, None, dispatched=2)
        return job_id

    async def load_jobs(self, job_ids: list[UUID]) -> list[tuple[JobRow, list[Any] | None]]:
        failures = [("S2", 0, 1, "HTTP 404"), ("S1", 0, 0, "HTTP 500")]
        return [(self.jobs[j], failures if self.jobs[j].status == "failed" else None)
                for j in job_ids if j in self.jobs]


class FakeReceiver:
    """Answers by URL: a list of statuses in turn, or "slow" (holds until released)."""

    timeout_s = 1.0

    def __init__(self, answers: dict[str, list[int | str]]) -> None:
        self.answers = answers
        self.got: list[tuple[str, bytes, dict[str, str]]] = []
        self.release = asyncio.Event()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Sent:
        self.got.append((url, body, headers))
        answer = self.answers[url].pop(0) if len(self.answers[url]) > 1 else self.answers[url][0]
        if answer == "slow":
            await self.release.wait()
            return Sent(None, "no answer within 1s", 1000)
        if answer == "refused":
            return Sent(None, "address not allowed: 127.0.0.1", 0, refused=True)
        return Sent(int(answer), None if 200 <= int(answer) < 300 else f"HTTP {answer}", 3)


def deliverer(table: FakeTable, view: FakeView, receiver: FakeReceiver, in_flight: int = 32) -> WebhookDeliverer:
    return WebhookDeliverer(table, view, receiver, Webhook(SECRET), RetryPolicy(86_400, 0.001, 0.001),
                            in_flight=in_flight, rand=lambda: 0.5)


async def running(loop: WebhookDeliverer, check: Callable[[], object]) -> None:
    task = asyncio.create_task(loop.run())
    try:
        await until(check, 10)
    finally:
        await stopped(loop, task)


async def stopped(loop: WebhookDeliverer, task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await loop.stop()


async def test_a_final_job_is_sent_its_status_signed_and_recorded_delivered() -> None:
    table, view = FakeTable(), FakeView()
    job_id = view.add("failed")
    table.add(job_id, "https://r/ok")
    receiver = FakeReceiver({"https://r/ok": [204]})
    await running(deliverer(table, view, receiver), lambda: table.recorded)
    [(url, body, headers)] = receiver.got
    sent = Webhook(SECRET).verify(body, headers)
    assert sent["job_id"] == str(job_id) and sent["status"] == "failed"
    assert sent["error"] == [{"store_id": "S1", "error": "HTTP 500"}, {"store_id": "S2", "error": "HTTP 404"}]
    assert body == json.dumps(sent, separators=(",", ":")).encode()  # compact, as the status route writes
    assert headers["webhook-id"] == f"msg_{job_id}"
    [(_, _, decision)] = table.recorded
    assert decision.state == DELIVERED


async def test_failures_are_retried_with_the_same_id_and_a_refused_address_fails_at_once() -> None:
    table, view = FakeTable(), FakeView()
    flaky, refused = view.add("completed"), view.add("cancelled")
    table.add(flaky, "https://r/flaky")
    table.add(refused, "http://127.0.0.1/x")
    receiver = FakeReceiver({"https://r/flaky": [500, 503, 200], "http://127.0.0.1/x": ["refused"]})
    loop = deliverer(table, view, receiver)
    await running(loop, lambda: sum(d.state == DELIVERED for _, _, d in table.recorded) == 1
                  and any(d.state == FAILED for _, _, d in table.recorded))
    flaky_attempts = [(due.attempts, sent.status_code, d.state) for due, sent, d in table.recorded
                      if due.job_id == flaky]
    assert flaky_attempts == [(0, 500, PENDING), (1, 503, PENDING), (2, 200, DELIVERED)]
    assert {h["webhook-id"] for url, _, h in receiver.got if url == "https://r/flaky"} == {f"msg_{flaky}"}
    assert [(sent.error, d.state) for due, sent, d in table.recorded if due.job_id == refused] == [
        ("address not allowed: 127.0.0.1", FAILED)]


async def test_a_slow_receiver_holds_up_only_its_own_delivery() -> None:
    table, view = FakeTable(), FakeView()
    slow = view.add("completed")
    table.add(slow, "https://r/slow")
    quick = [view.add("completed") for _ in range(5)]
    for job_id in quick:
        table.add(job_id, "https://r/quick")
    receiver = FakeReceiver({"https://r/slow": ["slow"], "https://r/quick": [204]})
    loop = deliverer(table, view, receiver, in_flight=2)  # the slow one takes one of the two slots
    task = asyncio.create_task(loop.run())
    try:
        await until(lambda: len(table.recorded) == 5)
        assert {due.job_id for due, _, _ in table.recorded} == set(quick)
        receiver.release.set()
        await until(lambda: len(table.recorded) == 6)
    finally:
        await stopped(loop, task)


async def test_a_job_missing_from_the_view_is_retried_not_sent() -> None:
    table, view = FakeTable(), FakeView()
    table.add(uuid4(), "https://r/ok")
    receiver = FakeReceiver({"https://r/ok": [204]})
    await running(deliverer(table, view, receiver), lambda: table.recorded)
    assert receiver.got == [] and table.recorded[0][2].state == PENDING
    assert table.recorded[0][2].next_attempt_at is not None
    assert table.recorded[0][2].next_attempt_at <= datetime.now(UTC) + timedelta(seconds=1)
