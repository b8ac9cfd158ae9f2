"""What a plain Prometheus scrape sees, with nobody calling `/readyz`: every service reports
itself ready, and the processors report their backlog (consumer lag) as it grows and drains.
And the alert rules shipped in deploy/prometheus/ pass promtool's checks and unit tests."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from deploy.devstack.paths import PROJECT_ROOT
from tests.support.stack import Infra, ServiceProcess, Stack
from tests.support.waiting import wait_for

PROMETHEUS_DIR = PROJECT_ROOT / "deploy" / "prometheus"


def _promtool(*args: str) -> str:
    binary = shutil.which("promtool")
    assert binary, "Debian's prometheus package (promtool) is installed by deploy/install-system-deps.sh"
    done = subprocess.run([binary, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_alert_rules_are_valid_and_fire_when_they_should() -> None:
    assert "SUCCESS: 7 rules found" in _promtool("check", "rules", "alerts.yml")
    _promtool("check", "config", "prometheus.yml")
    _promtool("test", "rules", "alerts_test.yml")


@pytest.fixture(scope="module")
def slow_stack(infra: Infra) -> Iterator[tuple[Stack, dict[str, ServiceProcess]]]:
    """One processor with one slot and 150 ms of simulated GPU per image: a backlog builds.
    Started without ever calling /readyz (only /healthz)."""
    stack = Stack(infra, env={"PROCESSOR_CONCURRENCY": "1", "PROCESSOR_GPU_DELAY_MS": "150",
                              "IMAGE_CACHE_TTL_S": "0"})
    try:
        services = {name: stack.start_service(name)
                    for name in ("sample_images", "ingest", "scheduler", "status", "processor")}
        for service in services.values():
            wait_for(lambda s=service: _alive(s), 60, f"{service.name} to answer /healthz")
        yield stack, services
    finally:
        stack.stop()


def _alive(service: ServiceProcess) -> bool:
    assert service.process.poll() is None, service.log_tail()
    try:
        return httpx.get(service.url + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _gauge(target: ServiceProcess, name: str, **labels: str) -> float | None:
    text = httpx.get(target.url + "/metrics", timeout=5).text
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            return float(match.group(2))
    return None


def test_a_scrape_alone_sees_every_service_ready_and_the_processors_backlog(
        slow_stack: tuple[Stack, dict[str, Any]]) -> None:
    stack, services = slow_stack
    for name in ("ingest", "scheduler", "status", "processor"):
        wait_for(lambda n=name: _gauge(services[n], "imagejobs_ready", service=n) == 1.0, 60,
                 f"{name} to report imagejobs_ready 1 on /metrics")
    processor, tasks = services["processor"], f"{stack.prefix}.tasks"
    images = services["sample_images"].url
    urls = [f"{images}/img/{40 + i}x{30 + i}.png" for i in range(120)]  # ~18 s at one slot
    job = {"count": 1, "visits": [{"store_id": "S00339218", "image_url": urls, "visit_time": "10:00"}]}
    assert httpx.post(services["ingest"].url + "/processJob", json=job, timeout=10).status_code == 200
    peak = wait_for(lambda: (lag := _gauge(processor, "imagejobs_consumer_lag", service="processor",
                                           topic=tasks)) and lag >= 10 and lag, 40,
                    "the processor to report its backlog")
    wait_for(lambda: _gauge(processor, "imagejobs_consumer_lag", service="processor", topic=tasks) == 0.0, 60,
             "the processor's backlog to drain")
    assert _gauge(services["status"], "imagejobs_consumer_lag", service="status") is not None
    assert _gauge(services["scheduler"], "imagejobs_consumer_lag", service="scheduler") is not None
    print(f"\nprocessor lag seen by a scrape: peak {peak:.0f} records, then 0")
