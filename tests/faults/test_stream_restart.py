"""A progress stream across a status restart: SIGTERM ends open streams at once (they do not
hold the shutdown for its grace period), and `imagejobs watch`'s client reconnects to the new
process with Last-Event-ID and still ends with the final status."""

from __future__ import annotations

import random
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from imagejobs_client.client import ImagejobsClient
from tests.support.client import Client
from tests.support.waiting import wait_for


def test_sigterm_closes_open_streams_and_a_client_resumes_on_the_restarted_service(fault_client: Client) -> None:
    stack = fault_client.stack
    w, h = random.randint(2000, 9000), random.randint(3, 90)
    due = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    job_id = fault_client.submit_ok({"count": 1, "scheduled_time": due, "visits": [
        {"store_id": "S00339218", "visit_time": "10:00",
         "image_url": [fault_client.image(w, h), f"{fault_client.images}/slow/4000/{w}x{h + 1}.png"]}]})
    seen: list[dict[str, Any]] = []
    follower = threading.Thread(
        target=lambda: seen.extend(ImagejobsClient(status_url=fault_client.status_url, timeout_s=10).follow(job_id)),
        daemon=True)
    follower.start()
    wait_for(lambda: bool(seen), 10, "the stream's first event")
    [status] = [p for p in stack.processes if p.name == "status" and p.process.poll() is None]
    stopping = time.monotonic()
    status.process.send_signal(signal.SIGTERM)
    wait_for(lambda: status.process.poll() is not None, 10, "the status service to exit with a stream open")
    assert status.process.returncode in (0, -signal.SIGTERM), status.log_tail()  # uvicorn re-raises it
    assert "without completing response" not in status.log_tail(), status.log_tail()  # ended, not cut
    assert time.monotonic() - stopping < 10
    stack.processes.remove(status)
    stack.wait_ready(stack.start_service("status", port=status.port))
    follower.join(60)
    assert not follower.is_alive(), "the client did not finish following the job"
    assert seen[0]["status"] == "scheduled" and seen[-1]["status"] == "completed"
    assert seen[-1] == fault_client.status(job_id).json()
    assert len({str(s) for s in seen}) == len(seen)  # nothing the client had was sent again
