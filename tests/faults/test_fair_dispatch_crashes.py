"""Two tenants' backlogs dispatched fairly while the scheduler, then a processor, are killed
with -9: nothing is lost, nothing is done twice, both tenants finish, and neither waited for
the other's backlog to drain (each has results before the first kill).

The dispatch window is small, so most of the work waits in the scheduler's fair queue when it
dies: the restarted scheduler dispatches on from the cursors it stored, and the tasks it hands
out again (those dispatched after the last stored cursor) are recognised by their task ids."""

from __future__ import annotations

import random
import signal
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest

from tests.support.client import Client
from tests.support.invariants import Batch, assert_promises_kept
from tests.support.stack import Infra, Stack
from tests.support.waiting import wait_for

KEYS = {"team-a": "key-a-3f9e2c71", "team-b": "key-b-81d0aa4e"}


class TenantClient(Client):
    """Reads each job with the key of the tenant that submitted it."""

    def __init__(self, stack: Stack, services: dict[str, Any]) -> None:
        super().__init__(stack, services)
        self.key_of: dict[str, str] = {}

    def submit_as(self, tenant: str, body: dict[str, Any]) -> tuple[str, datetime]:
        """The job's id and its scheduled_time as ingest resolved it."""
        answer = self.submit(body, headers={"Authorization": f"Bearer {KEYS[tenant]}"})
        assert answer.status_code == 200, answer.text
        job_id = str(answer.json()["job_id"])
        self.key_of[job_id] = KEYS[tenant]
        return job_id, datetime.fromisoformat(answer.json()["scheduled_time"].replace("Z", "+00:00"))

    def status(self, job_id: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key_of[job_id]}"} if job_id in self.key_of else {}
        return self.http.get(f"{self.status_url}/api/status/{job_id}", headers=headers)


@pytest.fixture(scope="module")
def tenants(infra: Infra) -> Iterator[TenantClient]:
    running = Stack(infra, env={"API_KEYS": ",".join(f"{k}:{t}" for t, k in KEYS.items()),
                                "PROCESSOR_GPU_DELAY_MS": "30-80", "PROCESSOR_CONCURRENCY": "8",
                                "DISPATCH_WINDOW": "24", "IMAGE_CACHE_TTL_S": "0"})
    try:
        yield TenantClient(running, running.start_all(processors=2))
    finally:
        running.stop()


def _backlogs(client: TenantClient, rng: random.Random, jobs: int, images: int) -> tuple[Batch, dict[str, set[str]]]:
    batch, of_tenant = Batch(), {tenant: set() for tenant in KEYS}
    for j in range(jobs):
        for tenant in KEYS:
            urls = [client.image(rng.randint(10, 400), rng.randint(10, 400)) + f"?{tenant}{j}-{i}"
                    for i in range(images)]
            body = {"count": 1, "visits": [{"store_id": "S00339218", "image_url": urls, "visit_time": "10:00"}]}
            job_id, batch.scheduled[job_id] = client.submit_as(tenant, body)
            batch.tasks[job_id] = {f"{job_id}:0:{i}" for i in range(images)}
            of_tenant[tenant].add(job_id)
    return batch, of_tenant


def _results(client: Client, job_ids: set[str]) -> int:
    with psycopg.connect(client.stack.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM processor_results WHERE job_id = ANY(%s)",
                           ([UUID(j) for j in job_ids],)).fetchone()
    return int(row[0]) if row else 0


def _running(stack: Stack, name: str) -> list[Any]:
    return [p for p in stack.processes if p.name == name and p.process.poll() is None]


def test_kill_9_scheduler_and_processor_during_fair_dispatch_of_two_tenants(tenants: TenantClient) -> None:
    rng, stack = random.Random(20261206), tenants.stack
    batch, of_tenant = _backlogs(tenants, rng, jobs=12, images=15)  # 180 images each
    everyone = set(batch.tasks)
    wait_for(lambda: _results(tenants, everyone) >= 60, 60, "a third of the work to be done")
    done = {tenant: _results(tenants, jobs) for tenant, jobs in of_tenant.items()}
    assert all(done.values()), f"a tenant waited for the other's backlog: {done}"
    stack.restart(_running(stack, "scheduler")[0], signal.SIGKILL)
    wait_for(lambda: _results(tenants, everyone) >= 200, 90, "more work done after the scheduler's restart")
    stack.restart(_running(stack, "processor")[0], signal.SIGKILL)
    report = assert_promises_kept(tenants, batch, deadline_s=180)
    assert report["lost"] == 0 and report["duplicates"] == 0
    for jobs in of_tenant.values():
        assert all(tenants.status(job_id).json()["status"] == "completed" for job_id in jobs)
