"""Ready means ready: `make clean`, then `make run`'s launcher on a fresh state directory, and
a job for real stores submitted the instant ingest and status both report ready completes.
Repeated, because the race it guards (the store master still loading) is a matter of timing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from deploy.devstack.net import free_port
from deploy.devstack.paths import PROJECT_ROOT
from tests.support.waiting import wait_for

ROUNDS = int(os.environ.get("FRESH_START_ROUNDS", "3"))
PORTS = ("KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "POSTGRES_PORT", "INGEST_PORT", "STATUS_PORT",
         "SCHEDULER_PORT", "SAMPLE_IMAGES_PORT", "PROCESSOR_PORT")


@pytest.fixture()
def fresh_stack(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The launcher on an empty state dir (what `make clean && make run` starts from), on free
    ports; stopped with Ctrl-C's signal at the end."""
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")}
    env.update({name: str(free_port()) for name in PORTS})
    env["PROCESSOR_PORT"] = str(_two_free_ports())
    state = tmp_path / "state"
    tmp_path.chmod(0o755)  # the postgres user must reach its data dir
    env.update({"IMAGEJOBS_STATE_DIR": str(state), "PROCESSOR_GPU_DELAY_MS": "0", "PYTHONUNBUFFERED": "1"})
    with open(tmp_path / "launcher.log", "wb") as log:
        launcher = subprocess.Popen([sys.executable, "-m", "deploy.devstack", "run"], cwd=PROJECT_ROOT,
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield env
    finally:
        launcher.send_signal(signal.SIGINT)
        try:
            launcher.wait(90)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait()


def _two_free_ports() -> int:
    """A port p with p + 1 free too (two processors take PROCESSOR_PORT and the next one)."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_a_job_submitted_the_instant_both_apis_are_ready_completes(fresh_stack: dict[str, str], round_: int) -> None:
    ingest = f"http://127.0.0.1:{fresh_stack['INGEST_PORT']}"
    status = f"http://127.0.0.1:{fresh_stack['STATUS_PORT']}"
    images = f"http://127.0.0.1:{fresh_stack['SAMPLE_IMAGES_PORT']}/webp/gallery"
    started = time.monotonic()
    end = started + 120
    while not (_ready(ingest) and _ready(status)):  # polled tightly: submit at the first instant
        assert time.monotonic() < end, "ingest and status did not both become ready in 120 s"
        time.sleep(0.02)
    job = {"count": 2, "scheduled_time": datetime.now(UTC).isoformat(), "visits": [
        {"store_id": "S00339218", "image_url": [f"{images}/2.jpg", f"{images}/3.jpg"], "visit_time": "10:00:00"},
        {"store_id": "S01408764", "image_url": [f"{images}/3.jpg"], "visit_time": "10:05:00"}]}
    submitted = httpx.post(ingest + "/processJob", json=job, timeout=10)
    assert submitted.status_code == 200, submitted.text
    job_id = submitted.json()["job_id"]

    def final() -> dict[str, object] | None:
        body = httpx.get(f"{status}/api/status/{job_id}", timeout=5).json()
        return body if body["status"] in ("completed", "failed", "cancelled") else None
    body = wait_for(final, 120, "the job submitted at start-up to finish")
    assert body["status"] == "completed", body
    print(f"\nfresh start {round_ + 1}: ready after {time.monotonic() - started:.1f}s, job completed")
