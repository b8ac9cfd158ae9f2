"""Tenant quotas at the front door, through the real stack: over TENANT_MAX_PENDING_IMAGES or
TENANT_SUBMIT_RATE a submit is answered 429 `{"error"}` with Retry-After and publishes
nothing; parallel submits of one tenant never overshoot; other tenants are unaffected;
cancelling frees the quota once the view has folded it; a refused burst is accepted after
its Retry-After."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support.client import Client
from tests.support.stack import Infra, Stack
from tests.support.waiting import wait_for

KEYS = {"qa": "quota-a-key-4d1e", "qb": "quota-b-key-93f0", "qr": "quota-r-key-6a2b"}
LIMIT = 100


@pytest.fixture(scope="module")
def quotas(infra: Infra) -> Iterator[Client]:
    env = {"API_KEYS": ",".join(f"{key}:{tenant}" for tenant, key in KEYS.items()),
           "TENANT_MAX_PENDING_IMAGES": str(LIMIT)}
    running = Stack(infra, env=env)
    try:
        yield Client(running, running.start_all(processors=1))
    finally:
        running.stop()


def ten_images(client: Client) -> dict[str, Any]:
    """A job of 10 images, due in 300 days: pending all along."""
    at = (datetime.now(UTC) + timedelta(days=300)).isoformat()
    return {"count": 1, "scheduled_time": at, "visits": [
        {"store_id": "S00339218", "visit_time": "10:00", "image_url": [client.image(i + 1, 2) for i in range(10)]}]}


def submit(client: Client, tenant: str, url: str | None = None) -> httpx.Response:
    return client.http.post(f"{url or client.ingest}/processJob", json=ten_images(client),
                            headers={"Authorization": f"Bearer {KEYS[tenant]}"})


def submitted_by(client: Client, tenant: str) -> set[str]:
    return {str(e.job_id) for _, e in client.topic_events_matching("jobs", f'"owner":"{tenant}"')
            if e.type == "JobSubmitted" and e.owner == tenant}


def metric(url: str, name: str, **labels: str) -> float | None:
    """The value of one sample on a service's /metrics, or None."""
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        found = re.fullmatch(rf"{name}{{(.*)}} (\S+)", line)
        if found and dict(re.findall(r'(\w+)="([^"]*)"', found.group(1))) == labels:
            return float(found.group(2))
    return None


def test_parallel_submits_stop_exactly_at_the_pending_limit_and_cancels_free_it(quotas: Client) -> None:
    client = quotas
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: submit(client, "qa"), range(20)))
    assert sorted(a.status_code for a in answers) == [200] * 10 + [429] * 10, [a.text for a in answers]
    for refused in (a for a in answers if a.status_code == 429):
        assert int(refused.headers["Retry-After"]) >= 1
        assert "limit is 100" in refused.json()["error"] and set(refused.json()) == {"error"}
    accepted = {a.json()["job_id"] for a in answers if a.status_code == 200}
    assert submitted_by(client, "qa") == accepted  # nothing published for a 429
    assert submit(client, "qb").status_code == 200  # another tenant: at once
    assert metric(client.ingest, "imagejobs_ingest_rejected_total", quota="pending", tenant="qa") == 10
    wait_for(lambda: metric(client.status_url, "imagejobs_tenant_pending_images", tenant="qa") == 100, 20,
             "the status service's gauge to show qa's 100 pending images")
    assert submit(client, "qa").status_code == 429
    headers = {"Authorization": f"Bearer {KEYS['qa']}"}
    for job_id in accepted:  # answered once the view has folded the cancel
        assert client.http.delete(f"{client.status_url}/api/jobs/{job_id}", headers=headers).status_code == 200
    freed = wait_for(lambda: (r := submit(client, "qa")).status_code == 200 and r, 10, "qa's quota to be free")
    assert freed.json()["job_id"] in submitted_by(client, "qa")


def test_a_burst_over_the_submit_rate_is_refused_until_its_retry_after(quotas: Client) -> None:
    """A second ingest on the same stack with TENANT_SUBMIT_RATE=50 (images/s per tenant)."""
    stack: Stack = quotas.stack
    ingest = stack.start_service("ingest", {"TENANT_SUBMIT_RATE": "50", "TENANT_MAX_PENDING_IMAGES": "0"})
    try:
        stack.wait_ready(ingest)
        started = time.monotonic()
        answers = [submit(quotas, "qr", ingest.url) for _ in range(15)]
        elapsed = time.monotonic() - started
        accepted = [a for a in answers if a.status_code == 200]
        refused = [a for a in answers if a.status_code == 429]
        assert len(accepted) + len(refused) == 15 and refused, [a.text for a in answers]
        # a full bucket (50) and one job into debt at once; never more than rate*T + capacity + one job
        assert 60 <= 10 * len(accepted) <= 50 * elapsed + 50 + 10
        retry_after = int(refused[-1].headers["Retry-After"])
        assert 1 <= retry_after <= 2 and "50 images/s" in refused[-1].json()["error"]
        assert submit(quotas, "qb", ingest.url).status_code == 200  # another tenant's bucket is full
        last_refusal = time.monotonic()
        wait_for(lambda: time.monotonic() >= last_refusal + retry_after, retry_after + 1, "Retry-After to pass")
        assert submit(quotas, "qr", ingest.url).status_code == 200
        assert metric(ingest.url, "imagejobs_ingest_rejected_total", quota="rate", tenant="qr") == len(refused)
    finally:
        ingest.stop()
