"""Every Grafana panel's query returns data from a real Prometheus scraping the stack under load."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.devstack.net import free_port
from shared.devstack.paths import PROJECT_ROOT
from tests.support.client import Client
from tests.support.waiting import wait_for

DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "dashboards" / "imagejobs.json"


@pytest.fixture(scope="module")
def prometheus(stack: Any) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus package is installed by deploy/install-system-deps.sh"
    running, _ = stack
    if not any(p.name == "storestats" for p in running.processes):  # the store statistics panels' source
        running.wait_ready(running.start_service("storestats"))
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


def test_every_panel_returns_data_under_load(prometheus: str, client: Client) -> None:
    sent = iter(range(10_000))
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        expr = panel["targets"][0]["expr"]

        def probe(e: str = expr) -> list[Any]:
            _load(client, next(sent))  # load keeps flowing while Prometheus scrapes
            return _query(prometheus, e)
        wait_for(probe, 60, f"data for panel {panel['title']!r}: {expr}", every_s=0.3)
