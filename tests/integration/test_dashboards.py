"""Every Grafana panel's query returns data from a real Prometheus scraping the stack under load.

The stack is its own, run as an operator with tenants would: API keys (the load submits as one
tenant, whose row of the dashboard is checked), a small HTTP_MAX_HEADER_BYTES, the store
statistics consumer, and a second ingest with TENANT_SUBMIT_RATE=1 (no pending quota). Before
the load: one quota refusal, one front-door refusal and one dead letter, so the panels counting
them have data."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from deploy.devstack.net import free_port
from deploy.devstack.paths import PROJECT_ROOT
from tests.support.client import Client
from tests.support.stack import Infra, Stack
from tests.support.waiting import wait_for

DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "dashboards" / "imagejobs.json"
KEY, TENANT = "dashboards-key-4e9b", "dash-team"
HEADER_LIMIT = 4096


@pytest.fixture(scope="module")
def keyed(infra: Infra) -> Iterator[tuple[Client, str]]:
    """The stack, a client submitting with KEY, and the URL of the rate-limited second ingest."""
    running = Stack(infra, env={"API_KEYS": f"{KEY}:{TENANT}", "HTTP_MAX_HEADER_BYTES": str(HEADER_LIMIT)})
    try:
        names = ("sample_images", "ingest", "scheduler", "status", "processor", "storestats")
        services = {name: running.start_service(name) for name in names}
        rated = running.start_service("ingest", {"TENANT_SUBMIT_RATE": "1", "TENANT_MAX_PENDING_IMAGES": "0"})
        for service in (*services.values(), rated):
            running.wait_ready(service)
        client = Client(running, services)
        client.http.headers["Authorization"] = f"Bearer {KEY}"
        yield client, rated.url
    finally:
        running.stop()


@pytest.fixture(scope="module")
def prometheus(keyed: tuple[Client, str]) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus package is installed by deploy/install-system-deps.sh"
    running = keyed[0].stack
    targets = [p.url.removeprefix("http://") for p in running.processes if p.name != "sample_images"]
    root = Path(tempfile.mkdtemp(prefix="imagejobs-prom-"))
    (root / "prometheus.yml").write_text(json.dumps({
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "imagejobs", "static_configs": [{"targets": targets}]}],
    }))
    port = free_port()
    with open(root / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url), 30, "prometheus to answer")
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _query(url: str, expr: str) -> list[Any]:
    body = httpx.get(url + "/api/v1/query", params={"query": expr}, timeout=5).json()
    return [r for r in body["data"]["result"] if r["value"][1] not in ("NaN", "+Inf", "-Inf")]


def _load(client: Client, i: int) -> None:
    """One job with four good images and one failing store: keeps every metric moving."""
    visits = [{"store_id": "S00339218", "visit_time": "10:00",
               "image_url": [client.image(200 + i % 300, 100 + j) for j in range(4)]},
              {"store_id": "NOPE" if i % 2 else "S01408764", "visit_time": "10:00",
               "image_url": [client.images + "/status/404"]}]
    client.submit_ok({"count": 2, "visits": visits})
    for service in client.stack.processes:  # readiness is a gauge refreshed by probes
        if service.name != "sample_images":
            httpx.get(service.url + "/readyz", timeout=5)


def _refusals_and_a_dead_letter(client: Client, rated: str) -> None:
    """A quota refusal (at TENANT_SUBMIT_RATE=1 a job of three images takes the bucket into
    debt, the next is refused; the accepted one is due in 300 days, so the tenant has pending
    images at once, not only when a refresh of the gauge catches a job of the load), a
    front-door refusal (a head over HTTP_MAX_HEADER_BYTES, still arriving) and a dead letter (a
    record on the tasks topic that is not an event)."""
    job = {"count": 1, "scheduled_time": (datetime.now(UTC) + timedelta(days=300)).isoformat(),
           "visits": [{"store_id": "S00339218", "visit_time": "10:00",
                       "image_url": [client.image(7, 7 + j) for j in range(3)]}]}
    answers = [client.http.post(rated + "/processJob", json=job).status_code for _ in range(2)]
    assert answers == [200, 429], answers
    ingest = urlsplit(client.ingest)
    with socket.create_connection((ingest.hostname, ingest.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: ingest\r\nX-Padding: " + b"x" * 2 * HEADER_LIMIT)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 431"), answer
    asyncio.run(_publish(client.stack.infra.kafka.bootstrap, f"{client.stack.prefix}.tasks", b"not an event"))


async def _publish(bootstrap: str, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"dashboards-test")
    finally:
        await producer.stop()


def _label_values(url: str, query: str) -> list[str]:
    """What Grafana's `label_values(metric, label)` variable query lists."""
    parsed = re.fullmatch(r"label_values\((\w+), *(\w+)\)", query)
    assert parsed, f"not a label_values(metric, label) query: {query}"
    metric, label = parsed.groups()
    body = httpx.get(f"{url}/api/v1/label/{label}/values", params={"match[]": metric}, timeout=5).json()
    return list(body["data"])


def test_every_panel_returns_data_under_load(prometheus: str, keyed: tuple[Client, str]) -> None:
    client, rated = keyed
    _refusals_and_a_dead_letter(client, rated)
    board = json.loads(DASHBOARD.read_text())
    missing: dict[str, Callable[[], bool]] = {}  # what has shown no data yet, and how to look
    for variable in board["templating"]["list"]:  # the tenant rows repeat over its values
        missing[f"${variable['name']}: {variable['query']}"] = (
            lambda q=variable["query"]: TENANT in _label_values(prometheus, q))
    for panel in board["panels"]:
        for target in panel.get("targets", []):  # a row has none; a panel may have several lines
            expr = target["expr"].replace("$tenant", TENANT)  # the tenant row, as Grafana repeats it
            name = f"panel {panel['title']!r} {target.get('legendFormat', '')}".rstrip()
            missing[f"{name}: {expr}"] = lambda e=expr: bool(_query(prometheus, e))
    sent = iter(range(10_000))

    def probe() -> bool:
        _load(client, next(sent))  # load keeps flowing while Prometheus scrapes
        for what, has_data in list(missing.items()):
            if has_data():
                del missing[what]
        return not missing
    try:
        wait_for(probe, 90, "data for every panel", every_s=0.3)
    except AssertionError:
        raise AssertionError("no data within 90 s for:\n" + "\n".join(missing)) from None
