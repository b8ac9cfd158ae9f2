"""Two scheduler instances split the jobs by partition: every job released, none twice in effect."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.support.client import Client
from tests.support.invariants import assert_promises_kept, read_all, submit_batch
from tests.support.stack import Infra, Stack
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def two_scheduler_client(infra: Infra) -> Iterator[Client]:
    running = Stack(infra)
    try:
        services = running.start_all(processors=1)
        extra = running.start_service("scheduler")
        running.wait_ready(extra)
        yield Client(running, services)
    finally:
        running.stop()


def _pending_metric(url: str) -> str:
    return httpx.get(url + "/metrics", timeout=5).text


def test_two_schedulers_release_every_job_exactly_once(two_scheduler_client: Client) -> None:
    client = two_scheduler_client
    schedulers = [p for p in client.stack.processes if p.name == "scheduler"]
    # Both instances own some of the jobs topic's partitions before any job is submitted.
    def owned() -> list[list[int]]:
        return [httpx.get(s.url + "/readyz", timeout=5).json().get("assigned_partitions", []) for s in schedulers]
    wait_for(lambda: all(owned()) and sum(len(p) for p in owned()) == 6, 30, "both schedulers to own partitions")
    batch = submit_batch(client, random.Random(7), jobs=40, ahead_s=2.5)
    assert_promises_kept(client, batch)
    releases = Counter(str(e.job_id) for _, e in read_all(client, ["jobs"])["jobs"] if e.type == "JobReleased")
    assert {j: releases[j] for j in batch.tasks} == {j: 1 for j in batch.tasks}
    released_by = [_released(s.url) for s in schedulers]
    assert all(n > 0 for n in released_by), released_by


def _released(url: str) -> float:
    for line in _pending_metric(url).splitlines():
        if line.startswith("imagejobs_scheduler_released_total "):
            return float(line.split()[1])
    return 0.0
