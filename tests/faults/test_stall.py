"""Readiness tells the truth: a consumer with lag that makes no progress for STALL_S is not
ready, `/readyz` says which and why, the stalled gauge says so for Prometheus, and it is ready
again once it moves. Here a processor's every slot hangs on a slow image server while tasks
wait behind them in the topic."""

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
def stalling(infra: Infra) -> Iterator[Client]:
    running = Stack(infra, env={"STALL_S": "2", "PROCESSOR_CONCURRENCY": "2", "IMAGE_CACHE_TTL_S": "0"})
    try:
        yield Client(running, running.start_all(processors=1))
    finally:
        running.stop()


def _readyz(url: str) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(url + "/readyz", timeout=5)
    return answer.status_code, answer.json()


def _stalled_gauge(url: str) -> float | None:
    match = re.search(r'^imagejobs_consumer_stalled\{service="processor"\} (\S+)$',
                      httpx.get(url + "/metrics", timeout=5).text, re.M)
    return float(match.group(1)) if match else None


def test_a_consumer_with_lag_and_no_progress_is_not_ready_and_says_why(stalling: Client) -> None:
    processor = next(p for p in stalling.stack.processes if p.name == "processor")
    slow = [f"{stalling.images}/slow/7000/{11 + i}x11.png" for i in range(2)]
    hanging = stalling.submit_ok(_one_visit(slow))
    wait_for(lambda: _readyz(processor.url)[1].get("running") == 2, 10, "both slots to hang on the slow images")
    fast = [stalling.image(20 + i, 20) + "?stall" for i in range(200)]  # more than the processor holds (128)
    job_id = stalling.submit_ok(_one_visit(fast))

    def not_ready() -> dict[str, Any] | None:
        code, body = _readyz(processor.url)
        return body if code == 503 else None
    body = wait_for(not_ready, 6, "the processor to report itself stalled")
    assert body["checks"] == {"kafka": True, "database": True, "consumer": False, "store_master": True}
    assert re.fullmatch(r"stalled: \d+ records behind and no progress for \d+s", body["reasons"]["consumer"])
    assert body["error"].startswith("not ready: consumer (stalled: ")
    assert _stalled_gauge(processor.url) == 1.0
    wait_for(lambda: _readyz(processor.url)[0] == 200, 30, "the processor to be ready once it moves again")
    assert _stalled_gauge(processor.url) == 0.0
    assert stalling.wait_final(job_id, 60)["status"] == stalling.wait_final(hanging, 60)["status"] == "completed"


def _one_visit(urls: list[str]) -> dict[str, Any]:
    return {"count": 1, "visits": [{"store_id": "S00339218", "image_url": urls, "visit_time": "10:00"}]}
