"""Fair dispatch on the real services (issue 18): released jobs' tasks reach the processors as
they take work, so a small job is not queued behind a big backlog, a more urgent job of the
same tenant goes first, and a job's status says how many of its images have started.

Behaviour, not speed: the simulated GPU makes one processor slow (four slots, 40-60 ms an
image), and each test asserts an ORDER that first-in-first-out dispatch cannot produce (the
small or urgent job is final while most of the backlog ahead of it is still pending). The
speed goals (within 2 s, tenants' weights, the big tenant's throughput) are in `make bench`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.client import Client
from tests.support.stack import Infra, Stack
from tests.support.waiting import wait_for

WINDOW = 16


@pytest.fixture(scope="module")
def slow_client(infra: Infra) -> Iterator[Client]:
    running = Stack(infra, env={"PROCESSOR_GPU_DELAY_MS": "40-60", "PROCESSOR_CONCURRENCY": "4",
                                "DISPATCH_WINDOW": str(WINDOW), "IMAGE_CACHE_TTL_S": "0"})
    try:
        yield Client(running, running.start_all(processors=1))
    finally:
        running.stop()


def _job(client: Client, images: int, **extra: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    urls = [client.image(10 + i % 500, 10 + i // 500) + f"?{tag}" for i in range(images)]
    return {"count": 1, "visits": [{"store_id": "S00339218", "image_url": urls, "visit_time": "10:00"}], **extra}


def _pending(client: Client, job_id: str) -> int:
    return int(client.status(job_id).json()["images"]["pending"])


def _started(client: Client, job_id: str) -> dict[str, Any] | None:
    body: dict[str, Any] = client.status(job_id).json()
    return body if body["images"]["succeeded"] + body["images"]["failed"] >= 20 else None


def test_a_small_job_overtakes_a_big_backlog_of_its_own_tenant(slow_client: Client) -> None:
    big = slow_client.submit_ok(_job(slow_client, 300))
    wait_for(lambda: _started(slow_client, big), 30, "the big job to be under way")
    small = slow_client.submit_ok(_job(slow_client, 1))
    assert slow_client.wait_final(small, 30)["status"] == "completed"
    assert _pending(slow_client, big) >= 150  # first-in-first-out would have drained it first
    assert slow_client.wait_final(big, 120)["status"] == "completed"


def test_a_more_urgent_job_goes_first(slow_client: Client) -> None:
    backlog = slow_client.submit_ok(_job(slow_client, 300, priority=5))
    wait_for(lambda: _started(slow_client, backlog), 30, "the backlog to be under way")
    urgent = slow_client.submit_ok(_job(slow_client, 20, priority=1))
    assert slow_client.wait_final(urgent, 30)["status"] == "completed"
    assert _pending(slow_client, backlog) >= 130  # twenty images went ahead of the rest of it
    assert slow_client.wait_final(backlog, 120)["status"] == "completed"
    assert slow_client.status(urgent).json()["priority"] == 1


def test_the_status_says_how_many_images_have_started(slow_client: Client) -> None:
    job_id = slow_client.submit_ok(_job(slow_client, 200))
    seen = wait_for(lambda: _started(slow_client, job_id), 30, "the job to be under way")
    images = seen["images"]
    finished = images["succeeded"] + images["failed"]
    assert seen["status"] == "ongoing" and seen["priority"] == 3
    assert finished <= images["started"] < images["total"]
    assert images["started"] - finished <= WINDOW + 4  # dispatched as the processor takes work
    final = slow_client.wait_final(job_id, 120)
    assert final["images"]["started"] == final["images"]["total"] == 200
