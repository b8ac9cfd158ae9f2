"""Two processor instances share the tasks of one 200-image job; each image once in effect."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.client import Client
from tests.support.stack import Infra, Stack
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def two_processor_stack(infra: Infra) -> Iterator[tuple[Stack, dict[str, Any]]]:
    running = Stack(infra, env={"PROCESSOR_GPU_DELAY_MS": "5-20", "IMAGE_CACHE_TTL_S": "0"})
    try:
        yield running, running.start_all(processors=2)
    finally:
        running.stop()


def _processed(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    return sum(float(m) for m in re.findall(r'^imagejobs_processor_images_total\{[^}]*\} (\S+)$', text, re.M))


def test_two_processors_share_a_200_image_job_exactly_once(two_processor_stack) -> None:  # type: ignore[no-untyped-def]
    running, services = two_processor_stack
    client = Client(running, services)
    processors = [p for p in running.processes if p.name == "processor"]
    wait_for(lambda: all(httpx.get(p.url + "/readyz", timeout=5).json().get("assigned_partitions")
                         for p in processors), 30, "both processors to own partitions")
    visits = [{"store_id": "S00339218", "visit_time": "10:00",
               "image_url": [client.image(100 + v, 200 + i) for i in range(10)]} for v in range(20)]
    job_id = client.submit_ok({"count": 20, "visits": visits})
    final = client.wait_final(job_id, deadline_s=90)
    assert final["status"] == "completed"
    assert final["images"] == {"total": 200, "succeeded": 200, "failed": 0, "pending": 0, "started": 200}
    rows = client.result_rows(job_id)
    assert len(rows) == 200 and len({r[0] for r in rows}) == 200
    assert all(r[2] == 100 + int(r[0].split(":")[1]) and r[3] == 200 + int(r[0].split(":")[2]) for r in rows)
    counts = [_processed(p.url) for p in processors]
    assert all(c > 0 for c in counts), counts
    assert sum(counts) == 200, counts
