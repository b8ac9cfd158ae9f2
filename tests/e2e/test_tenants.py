"""Tenants (API_KEYS="key:tenant,..."): a job belongs to its tenant; every key of the tenant
reads, lists, cancels, reschedules it and reads its results, a new key of the tenant (a
rotation) sees the old jobs, any other tenant gets 404. Jobs recorded before tenants existed
(owner = the hash of the submitting key) answer to that key's tenant while the key is listed.
A malformed API_KEYS stops ingest and status at start, naming the entry and never the key;
without API_KEYS each logs one warning."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaProducer

from shared.auth import owner_of
from shared.events import FINAL_STATUSES, JobSubmitted, Visit, encode_event
from tests.support.client import Client
from tests.support.stack import Infra, Stack, refused_at_start
from tests.support.waiting import wait_for

A1, A2, B1, SOLO = "team-a-key-1f9e", "team-a-key-2c4d", "team-b-key-7a0b", "solo-key-5e6f"
A3 = "team-a-key-3b8c"  # the rotated-in key
API_KEYS = f"{A1}:team-a,{A2}:team-a,{B1}:team-b,{SOLO}"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def tenants(infra: Infra) -> Iterator[Client]:
    running = Stack(infra, env={"API_KEYS": API_KEYS})
    try:
        yield Client(running, running.start_all(processors=1))
    finally:
        running.stop()


def later() -> str:
    return (datetime.now(UTC) + timedelta(days=300)).isoformat()


def job(client: Client, **extra: Any) -> dict[str, Any]:
    return {"count": 1, "visits": [{"store_id": "S00339218", "image_url": [client.image(9, 4)], "visit_time": "10:00"}],
            **extra}


def submit(client: Client, key: str, **extra: Any) -> str:
    answer = client.submit(job(client, **extra), headers=bearer(key))
    assert answer.status_code == 200, answer.text
    return str(answer.json()["job_id"])


class Api:
    """Every job route of a status service, as one key."""

    def __init__(self, client: Client, key: str, status_url: str | None = None) -> None:
        self.http, self.url, self.headers = client.http, status_url or client.status_url, bearer(key)

    def status(self, job_id: str) -> httpx.Response:
        return self.http.get(f"{self.url}/api/status/{job_id}", headers=self.headers)

    def status_by_query(self, job_id: str) -> httpx.Response:
        return self.http.get(f"{self.url}/api/status", params={"jobid": job_id}, headers=self.headers)

    def results(self, job_id: str) -> httpx.Response:
        return self.http.get(f"{self.url}/api/jobs/{job_id}/results", headers=self.headers)

    def cancel(self, job_id: str) -> httpx.Response:
        return self.http.delete(f"{self.url}/api/jobs/{job_id}", headers=self.headers)

    def events(self, job_id: str) -> httpx.Response:
        return self.http.get(f"{self.url}/api/jobs/{job_id}/events", headers=self.headers)

    def batch(self, *job_ids: str) -> httpx.Response:
        return self.http.post(f"{self.url}/api/status", json={"job_ids": list(job_ids)}, headers=self.headers)

    def reschedule(self, job_id: str) -> httpx.Response:
        return self.http.patch(f"{self.url}/api/jobs/{job_id}", json={"scheduled_time": later()}, headers=self.headers)

    def listed(self) -> set[str]:
        answer = self.http.get(f"{self.url}/api/jobs", params={"limit": 200}, headers=self.headers)
        assert answer.status_code == 200, answer.text
        return {j["job_id"] for j in answer.json()["jobs"]}

    def wait_final(self, job_id: str) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            body = self.status(job_id).json()
            return body if body.get("status") in FINAL_STATUSES else None
        return wait_for(final, 60, f"job {job_id} to finish")


def test_two_keys_of_one_tenant_share_its_jobs(tenants: Client) -> None:
    client, one, two = tenants, Api(tenants, A1), Api(tenants, A2)
    waiting = submit(client, A1, scheduled_time=later())
    assert two.status(waiting).status_code == 200 and two.status_by_query(waiting).status_code == 200
    assert waiting in two.listed()
    assert two.reschedule(waiting).status_code == 200
    cancelled = two.cancel(waiting)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert one.status(waiting).json()["status"] == "cancelled"
    done = submit(client, A2)
    assert one.wait_final(done)["status"] == "completed"
    rows = one.results(done).json()["results"]
    assert [(r["width"], r["height"], r["perimeter"]) for r in rows] == [(9, 4, 26)]
    [submitted] = [e for _, e in client.topic_events("jobs", done) if e.type == "JobSubmitted"]
    assert submitted.owner == "team-a"  # the tenant: never a key, never a hash of one


def test_another_tenant_gets_404_on_every_route_and_an_empty_list(tenants: Client) -> None:
    client, other, solo = tenants, Api(tenants, B1), Api(tenants, SOLO)
    waiting, done = submit(client, A1, scheduled_time=later()), submit(client, A1)
    Api(client, A1).wait_final(done)
    for outsider in (other, solo):
        for job_id in (waiting, done):
            for route in (outsider.status, outsider.status_by_query, outsider.results, outsider.cancel,
                          outsider.reschedule, outsider.events):
                answer = route(job_id)
                assert (answer.status_code, answer.json()) == (404, {"error": "job not found"}), route.__name__
        assert not {waiting, done} & outsider.listed()
        assert outsider.batch(waiting, done).json() == {"jobs": [], "not_found": [waiting, done]}
    assert Api(client, A1).status(waiting).json()["status"] == "scheduled"  # the refused commands changed nothing
    mine = submit(client, SOLO)
    assert solo.status(mine).status_code == 200 and mine in solo.listed() and mine not in Api(client, A1).listed()


def test_a_rotated_key_sees_the_tenants_old_jobs(tenants: Client) -> None:
    """A second ingest and status pair where team-a has only a NEW key (the old ones removed)."""
    client, stack = tenants, tenants.stack
    old = submit(client, A1, scheduled_time=later())
    rotated = {"API_KEYS": f"{A3}:team-a,{B1}:team-b"}
    ingest, status = stack.start_service("ingest", rotated), stack.start_service("status", rotated)
    try:
        stack.wait_ready(ingest)
        stack.wait_ready(status)
        new = Api(client, A3, status.url)
        assert new.status(old).status_code == 200 and old in new.listed()
        assert Api(client, A1, status.url).status(old).status_code == 401  # the old key is gone there
        fresh = client.http.post(f"{ingest.url}/processJob", json=job(client, scheduled_time=later()),
                                 headers=bearer(A3))
        assert fresh.status_code == 200
        assert Api(client, A2).status(fresh.json()["job_id"]).status_code == 200  # and the other way round
        assert Api(client, B1, status.url).status(old).status_code == 404
    finally:
        for service in (ingest, status):
            service.stop()


def test_a_job_recorded_under_a_legacy_key_hash_answers_to_that_keys_tenant(tenants: Client) -> None:
    """Before tenants, a job's owner was the hash of its key. Such a job belongs to the tenant
    that key is listed under now: that key and the tenant's other keys see it; others do not."""
    client = tenants
    legacy_a = asyncio.run(_publish_legacy(client.stack, owner_of(A1)))
    legacy_solo = asyncio.run(_publish_legacy(client.stack, owner_of(SOLO)))  # a keyless entry's tenant name
    one, two = Api(client, A1), Api(client, A2)
    wait_for(lambda: one.status(legacy_a).status_code == 200, 30, "the legacy job to be folded")
    assert two.status(legacy_a).status_code == 200 and legacy_a in one.listed() and legacy_a in two.listed()
    assert Api(client, SOLO).status(legacy_solo).status_code == 200
    for outsider in (Api(client, B1), Api(client, SOLO)):
        assert outsider.status(legacy_a).status_code == 404 and legacy_a not in outsider.listed()
    assert Api(client, B1).status(legacy_solo).status_code == 404 and one.status(legacy_solo).status_code == 404
    assert two.cancel(legacy_a).json()["status"] == "cancelled"


async def _publish_legacy(stack: Stack, owner: str) -> str:
    """A JobSubmitted as ingest wrote it before tenants existed: the owner is a key hash."""
    event = JobSubmitted(job_id=uuid.uuid4(), scheduled_time=datetime.now(UTC) + timedelta(days=300),
                         visits=(Visit(store_id="S00339218", image_urls=("http://127.0.0.1:9/x.png",)),), owner=owner)
    producer = AIOKafkaProducer(bootstrap_servers=stack.infra.kafka.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(f"{stack.prefix}.jobs", encode_event(event), key=str(event.job_id).encode())
    finally:
        await producer.stop()
    return str(event.job_id)


@pytest.mark.parametrize(("service", "setting", "message"), [
    ("ingest", "s3cr3t-alpha:a,s3cr3t-beta:", "API_KEYS entry 2: empty tenant after ':'"),
    ("status", "s3cr3t-alpha:a,:b", "API_KEYS entry 2: empty key"),
    ("ingest", "s3cr3t-alpha:a,s3cr3t-beta:b,s3cr3t-alpha:c", "API_KEYS entry 3: the same key as entry 1"),
])
def test_a_malformed_api_keys_stops_the_service_naming_the_entry(infra: Infra, service: str, setting: str,
                                                                 message: str) -> None:
    output = refused_at_start(infra, service, {"API_KEYS": setting})
    assert message in output and "s3cr3t" not in output


def test_without_api_keys_each_service_warns_once_that_auth_is_off(stack: tuple[Stack, dict[str, Any]]) -> None:
    _, services = stack
    for name in ("ingest", "status"):
        lines = services[name].log_path.read_text(errors="replace").splitlines()
        warnings = [line for line in lines if "authentication is off" in line]
        assert len(warnings) == 1 and "WARN" in warnings[0], (name, warnings)


def test_the_view_records_tenant_names_only(tenants: Client) -> None:
    job_id = submit(tenants, B1, scheduled_time=later())
    assert Api(tenants, B1).status(job_id).status_code == 200
    with psycopg.connect(tenants.stack.database_url) as conn:
        assert conn.execute("SELECT owner FROM status_jobs WHERE job_id = %s", (job_id,)).fetchone() == ("team-b",)


def test_batch_status_lists_another_tenants_job_as_not_found(tenants: Client) -> None:
    client, one, two = tenants, Api(tenants, A1), Api(tenants, A2)
    mine, theirs = submit(client, A1, scheduled_time=later()), submit(client, B1, scheduled_time=later())
    answer = two.batch(theirs, mine)  # another key of team-a
    assert answer.status_code == 200
    assert answer.json() == {"jobs": [one.status(mine).json()], "not_found": [theirs]}
    assert client.http.post(f"{client.status_url}/api/status", json={"job_ids": [mine]}).status_code == 401
