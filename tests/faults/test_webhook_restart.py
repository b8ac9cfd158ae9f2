"""A webhook pending when the status service is killed with -9 is still delivered, with the
same `webhook-id`: the receiver answers 500 at first (the delivery waits for its retry), then
holds the next attempt open while the status service is killed mid-send; the restarted
service claims the delivery again once its lease has run out, and the receiver's 204 ends it."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks import Webhook

from tests.faults.conftest import run_fault_stack
from tests.support.client import Client
from tests.support.receiver import Receiver
from tests.support.stack import Infra, Stack
from tests.support.waiting import wait_for

SECRET = "whsec_" + base64.b64encode(b"imagejobs webhook restart test!!").decode()


@pytest.fixture(scope="module")
def hooked_stack(infra: Infra) -> Iterator[tuple[Stack, dict[str, Any]]]:
    # a short attempt deadline keeps the lease of the attempt killed mid-send (deadline + 5 s) short
    yield from run_fault_stack(infra, {"WEBHOOK_SECRET": SECRET, "WEBHOOK_TIMEOUT_S": "2",
                                       "WEBHOOK_RETRY_BASE_S": "0.05", "WEBHOOK_RETRY_MAX_S": "0.2"})


def test_kill_9_the_status_service_with_a_delivery_pending_and_it_is_still_delivered(
        hooked_stack: tuple[Stack, dict[str, Any]]) -> None:
    stack, services = hooked_stack
    client = Client(stack, services)
    held, released = threading.Event(), threading.Event()

    def answer(n: int) -> int:
        if n == 2:  # the second attempt stays open until the status service has been killed
            held.set()
            released.wait(30)
        return 500 if n <= 2 else 204

    receiver = Receiver(answer)
    try:
        job_id = client.submit_ok({"count": 1, "callback_url": receiver.url(), "visits": [
            {"store_id": "S00339218", "image_url": [client.image(11, 3)], "visit_time": "10:00"}]})
        assert client.wait_final(job_id)["status"] == "completed"
        wait_for(held.is_set, 30, "the second attempt to reach the receiver")
        status = next(s for s in stack.processes if s.name == "status" and s.process.poll() is None)
        stack.restart(status)  # kill -9 mid-send, then start again on the same port
        released.set()

        def delivered() -> dict[str, Any] | None:
            body = client.http.get(f"{client.status_url}/api/jobs/{job_id}/webhook").json()
            return body if body["state"] == "delivered" else None
        webhook = wait_for(delivered, 45, "the webhook to be delivered by the restarted status service")
    finally:
        released.set()
        receiver.close()
    assert receiver.count() == 3
    assert {r.headers["webhook-id"] for r in receiver.requests} == {f"msg_{job_id}"}
    assert Webhook(SECRET).verify(receiver.requests[-1].body, receiver.requests[-1].headers) == \
        client.status(job_id).json()
    # the attempt killed mid-send was never recorded; the one after the restart was
    assert [(a["attempt"], a["status_code"]) for a in webhook["attempts"]] == [(1, 500), (2, 204)]
