"""Signed completion webhooks through the real stack: a job with a `callback_url` that becomes
final (completed, failed or cancelled) is POSTed to a receiver this test runs on 127.0.0.1,
with exactly the JSON of `GET /api/status/{id}`, signed by the Standard Webhooks convention and
verified here with standardwebhooks; non-2xx answers are retried with the same `webhook-id`;
the owner (and nobody else) sees every attempt; a bad `callback_url` is a 400 that publishes
nothing; a receiver on a private address is refused without a connection, as an image host
is; a malformed WEBHOOK_SECRET stops ingest and status at start."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook
from typer.testing import CliRunner

from imagejobs_client.cli import app as cli
from tests.support.client import Client
from tests.support.listener import ConnectionRecorder
from tests.support.receiver import Receiver
from tests.support.stack import Infra, Stack, refused_at_start
from tests.support.waiting import wait_for

SECRET = "whsec_" + base64.b64encode(b"imagejobs e2e webhooks secret 32").decode()
KEY_A, KEY_B = "hooks-a-key-0c1d", "hooks-b-key-9e8f"
FAST_RETRIES = {"WEBHOOK_SECRET": SECRET, "WEBHOOK_RETRY_BASE_S": "0.05", "WEBHOOK_RETRY_MAX_S": "0.2",
                "WEBHOOK_TIMEOUT_S": "5", "API_KEYS": f"{KEY_A}:hooks-a,{KEY_B}:hooks-b"}


def _started(infra: Infra, env: dict[str, str]) -> Iterator[Client]:
    running = Stack(infra, env=env)
    try:
        client = Client(running, running.start_all(processors=1))
        client.http.headers["Authorization"] = f"Bearer {KEY_A}"  # tenant hooks-a unless a test says otherwise
        yield client
    finally:
        running.stop()


@pytest.fixture(scope="module")
def hooked(infra: Infra) -> Iterator[Client]:
    yield from _started(infra, FAST_RETRIES)


@pytest.fixture(scope="module")
def guarded(infra: Infra) -> Iterator[Client]:
    """Receivers on private networks refused (the production default); images still load from
    the loopback sample server, as the suite lets processors do."""
    yield from _started(infra, {**FAST_RETRIES, "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "false"})


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    yield started
    started.close()


def job(client: Client, callback_url: Any, *, later: bool = False, **extra: Any) -> dict[str, Any]:
    body = {"count": 1, "callback_url": callback_url, **extra,
            "visits": [{"store_id": "S00339218", "image_url": [client.image(7, 5)], "visit_time": "10:00"}]}
    if later:
        body["scheduled_time"] = (datetime.now(UTC) + timedelta(days=300)).isoformat()
    return body


def webhook_of(client: Client, job_id: str, key: str = KEY_A) -> httpx.Response:
    return client.http.get(f"{client.status_url}/api/jobs/{job_id}/webhook", headers={"Authorization": f"Bearer {key}"})


def settled(client: Client, job_id: str, deadline_s: float = 30) -> dict[str, Any]:
    """The job's webhook once it is delivered or failed."""
    def probe() -> dict[str, Any] | None:
        body = webhook_of(client, job_id).json()
        return body if body.get("state") in ("delivered", "failed") else None
    return wait_for(probe, deadline_s, f"job {job_id}'s webhook to be delivered or fail")


def metric(url: str, name: str, **labels: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        found = re.fullmatch(rf"{name}(?:{{(.*)}})? (\S+)", line)
        if found and dict(re.findall(r'(\w+)="([^"]*)"', found.group(1) or "")) == labels:
            return float(found.group(2))
    return 0.0


def test_a_completed_job_posts_exactly_its_status_signed_and_verifiable(hooked: Client, receiver: Receiver) -> None:
    job_id = hooked.submit_ok(job(hooked, receiver.url("/hooks/a?team=1")))
    assert hooked.wait_final(job_id)["status"] == "completed"
    webhook = settled(hooked, job_id)
    assert webhook["state"] == "delivered" and receiver.count() == 1
    [received] = receiver.requests
    assert received.body == hooked.status(job_id).content  # byte for byte what GET /api/status answers
    assert received.headers["content-type"] == "application/json"
    assert received.headers["webhook-id"] == f"msg_{job_id}" == webhook["webhook_id"]
    assert Webhook(SECRET).verify(received.body, received.headers) == hooked.status(job_id).json()
    assert webhook["url"] == receiver.url("/hooks/a?team=1") and webhook["next_attempt_at"] is None
    [attempt] = webhook["attempts"]
    assert attempt["attempt"] == 1 and attempt["status_code"] == 204 and attempt["error"] is None
    assert webhook["delivered_at"] >= attempt["at"]


def test_a_receiver_answering_500_twice_then_204_gets_the_same_message_three_times(hooked: Client) -> None:
    receiver = Receiver(lambda n: 500 if n <= 2 else 204)
    try:
        job_id = hooked.submit_ok(job(hooked, receiver.url()))
        webhook = settled(hooked, job_id)
        assert webhook["state"] == "delivered"
        assert [(a["attempt"], a["status_code"], a["error"]) for a in webhook["attempts"]] == [
            (1, 500, "HTTP 500"), (2, 500, "HTTP 500"), (3, 204, None)]
        assert receiver.count() == 3
        assert {r.headers["webhook-id"] for r in receiver.requests} == {f"msg_{job_id}"}
        assert len({r.body for r in receiver.requests}) == 1  # the same status each time
        for received in receiver.requests:  # each attempt signed afresh, each verifiable
            assert Webhook(SECRET).verify(received.body, received.headers)["status"] == "completed"
    finally:
        receiver.close()
    assert metric(hooked.status_url, "imagejobs_webhook_deliveries_total", outcome="retried") >= 2
    assert metric(hooked.status_url, "imagejobs_webhook_deliveries_total", outcome="delivered") >= 1
    assert metric(hooked.status_url, "imagejobs_webhook_delay_seconds_count") >= 1


def test_a_cancelled_job_gets_its_cancelled_status(hooked: Client, receiver: Receiver) -> None:
    job_id = hooked.submit_ok(job(hooked, receiver.url(), later=True))
    waiting = webhook_of(hooked, job_id).json()
    assert waiting == {"url": receiver.url(), "webhook_id": f"msg_{job_id}", "state": "waiting", "attempts": [],
                       "next_attempt_at": None, "delivered_at": None}
    assert hooked.http.delete(f"{hooked.status_url}/api/jobs/{job_id}").status_code == 200
    assert settled(hooked, job_id)["state"] == "delivered"
    [received] = receiver.requests
    assert Webhook(SECRET).verify(received.body, received.headers) == hooked.status(job_id).json()
    assert received.body == hooked.status(job_id).content and b'"status":"cancelled"' in received.body


def test_a_failed_job_sends_its_per_store_errors(hooked: Client, receiver: Receiver) -> None:
    body = job(hooked, receiver.url())
    body["visits"][0]["image_url"] = [f"{hooked.images}/status/404"]
    job_id = hooked.submit_ok(body)
    assert settled(hooked, job_id)["state"] == "delivered"
    sent = Webhook(SECRET).verify(receiver.requests[0].body, receiver.requests[0].headers)
    assert sent["status"] == "failed" and sent["error"][0]["store_id"] == "S00339218"
    assert sent == hooked.status(job_id).json()


def test_only_the_owner_sees_a_webhook_and_only_a_job_with_a_callback_url_has_one(hooked: Client,
                                                                                  receiver: Receiver) -> None:
    job_id = hooked.submit_ok(job(hooked, receiver.url(), later=True))
    assert webhook_of(hooked, job_id).status_code == 200
    foreign = webhook_of(hooked, job_id, KEY_B)
    assert foreign.status_code == 404 and foreign.json() == {"error": "job not found"}
    plain = hooked.submit_ok(job(hooked, None, later=True))
    none = webhook_of(hooked, plain)
    assert none.status_code == 404 and "callback_url" in none.json()["error"]
    assert webhook_of(hooked, "3f1c2a9e-1b2c-4d5e-8f90-123456789abc").status_code == 404
    assert webhook_of(hooked, "not-a-uuid").status_code == 400
    assert hooked.http.get(f"{hooked.status_url}/api/jobs/{job_id}/webhook", headers={"Authorization": ""}
                           ).status_code == 401


def test_imagejobs_submit_callback_url_and_imagejobs_webhook(hooked: Client, receiver: Receiver) -> None:
    base = ["--url", hooked.ingest, "--status-url", hooked.status_url]
    env = {"API_KEY": KEY_A, "COLUMNS": "240"}
    submitted = CliRunner().invoke(cli, [*base, "submit", "--store", "S00339218", "--image", hooked.image(3, 8),
                                         "--callback-url", receiver.url()], env=env)
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.strip().splitlines()[0]
    assert settled(hooked, job_id)["state"] == "delivered"
    shown = CliRunner().invoke(cli, [*base, "webhook", job_id], env=env)
    assert shown.exit_code == 0 and json.loads(shown.stdout)["webhook_id"] == f"msg_{job_id}", shown.output


@pytest.mark.parametrize("url", ["ftp://hooks.example.com/x", "not a url", "/relative/hook", 7, True,
                                 ["http://127.0.0.1/"], "https://hooks.example.com/" + "a" * 2100,
                                 "http://exa mple.com/"])
def test_a_bad_callback_url_is_a_400_naming_it_and_publishes_nothing(hooked: Client, url: Any) -> None:
    before = hooked.topic_end("jobs")
    answer = hooked.submit(job(hooked, url))
    assert answer.status_code == 400
    assert answer.json() == {"error": "callback_url: must be an absolute http or https URL"}
    assert hooked.topic_end("jobs") == before


def test_a_callback_url_on_a_deployment_without_a_secret_is_refused(client: Client) -> None:
    before = client.topic_end("jobs")
    answer = client.submit(job(client, "https://hooks.example.com/x"))
    assert answer.status_code == 400 and answer.json()["error"].startswith("callback_url: webhooks are off")
    assert "WEBHOOK_SECRET is not set" in answer.json()["error"]
    assert client.topic_end("jobs") == before


def test_a_receiver_on_a_private_address_is_refused_like_an_image_host(guarded: Client) -> None:
    listener = ConnectionRecorder()
    try:
        literal = guarded.submit_ok(job(guarded, f"http://127.0.0.1:{listener.port}/hook"))
        named = guarded.submit_ok(job(guarded, f"http://localhost:{listener.port}/hook"))
        assert guarded.wait_final(literal)["status"] == "completed"  # the images still load
        for job_id, reason in ((literal, "address not allowed: 127.0.0.1"),
                               (named, "address not allowed: localhost resolves to")):
            webhook = settled(guarded, job_id)
            assert webhook["state"] == "failed" and webhook["next_attempt_at"] is None, webhook
            [attempt] = webhook["attempts"]  # failed at once, never retried
            assert attempt["status_code"] is None and attempt["error"].startswith(reason), attempt
        assert listener.connections == []
    finally:
        listener.close()
    assert metric(guarded.status_url, "imagejobs_webhook_deliveries_total", outcome="failed") >= 2


def test_openapi_documents_the_callback_url_the_webhook_and_its_route(hooked: Client) -> None:
    ingest = hooked.http.get(f"{hooked.ingest}/openapi.json").json()
    assert "callback_url" in ingest["components"]["schemas"]["JobIn"]["properties"]
    [callback] = ingest["paths"]["/processJob"]["post"]["callbacks"].values()
    sent = callback["{$request.body#/callback_url}"]["post"]
    assert {p["name"] for p in sent["parameters"] if p["in"] == "header"} == {
        "webhook-id", "webhook-timestamp", "webhook-signature"}
    assert sent["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/JobStatus"}
    assert "422" not in sent["responses"] and "JobStatus" in ingest["components"]["schemas"]
    status = hooked.http.get(f"{hooked.status_url}/openapi.json").json()
    route = status["paths"]["/api/jobs/{job_id}/webhook"]["get"]["responses"]
    assert route["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/WebhookStatus"}
    assert {"400", "401", "404", "503"} <= set(route) and "422" not in route


@pytest.mark.parametrize("service", ["ingest", "status"])
@pytest.mark.parametrize("secret", ["s3cr3t-without-prefix", "whsec_s3cr3t!!",
                                    "whsec_" + base64.b64encode(b"s3cr3t").decode()])
def test_a_malformed_webhook_secret_stops_the_service_with_one_line(infra: Infra, service: str, secret: str) -> None:
    output = refused_at_start(infra, service, {"WEBHOOK_SECRET": secret})
    assert "WEBHOOK_SECRET: must be whsec_" in output and "s3cr3t" not in output
