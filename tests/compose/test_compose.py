"""The compose deployment, checked through its published ports only (issue 11): the example
job's exact perimeters, an unknown store's error, a processor container killed mid-job, and
`down` then `up` keeping every job, offset and schedule."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from shared.events import FINAL_STATUSES, JobReleased, decode_event
from tests.compose.deployment import ROOT, Deployment, docker
from tests.support.invariants import read_topics
from tests.support.waiting import wait_for

SAMPLES = "http://samples:8090"


def submit(deployment: Deployment, body: dict[str, Any]) -> str:
    response = httpx.post(deployment.ingest + "/processJob", json=body, timeout=15)
    assert response.status_code == 200, response.text
    return str(response.json()["job_id"])


def status(deployment: Deployment, job_id: str) -> dict[str, Any]:
    return httpx.get(f"{deployment.status}/api/status/{job_id}", timeout=15).json()


def results(deployment: Deployment, job_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{deployment.status}/api/jobs/{job_id}/results", params={"limit": 1000}, timeout=15)
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


def wait_final(deployment: Deployment, job_id: str, deadline_s: float = 90) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body = status(deployment, job_id)
        return body if body.get("status") in FINAL_STATUSES else None
    return wait_for(probe, deadline_s, f"job {job_id} to finish", every_s=0.2)


def slow_job(images: int, delay_ms: int) -> dict[str, Any]:
    """`images` distinct 64x64 PNGs (perimeter 256), each answered after `delay_ms`."""
    per_visit = 30
    visits = [{"store_id": "S00339218", "visit_time": "10:00:00",
               "image_url": [f"{SAMPLES}/slow/{delay_ms}/64x64.png?n={start + i}"
                             for i in range(min(per_visit, images - start))]}
              for start in range(0, images, per_visit)]
    return {"count": len(visits), "visits": visits}


def test_example_job_completes_with_exact_perimeters(deployment: Deployment) -> None:
    job = json.loads((ROOT / "data" / "compose-example-job.json").read_text())
    job_id = submit(deployment, job)
    assert wait_final(deployment, job_id)["status"] == "completed"
    assert [r["perimeter"] for r in results(deployment, job_id)] == [1908, 4000, 4000]


def test_unknown_store_fails_with_its_error(deployment: Deployment) -> None:
    job = {"count": 1, "visits": [{"store_id": "S_NOT_A_STORE", "visit_time": "10:00:00",
                                   "image_url": [f"{SAMPLES}/img/10x10.png"]}]}
    final = wait_final(deployment, submit(deployment, job))
    assert final["status"] == "failed"
    assert final["error"] == [{"store_id": "S_NOT_A_STORE", "error": "store not found"}]


def test_killing_a_processor_mid_job_loses_nothing(deployment: Deployment) -> None:
    images = 300
    job_id = submit(deployment, slow_job(images, delay_ms=1000))
    wait_for(lambda: status(deployment, job_id)["images"]["succeeded"] >= 20, 60, "some images done", 0.1)
    victim = deployment.containers("processor")[0]
    docker("kill", victim)
    done_at_kill = status(deployment, job_id)["images"]["succeeded"]
    final = wait_final(deployment, job_id, deadline_s=120)
    rows = results(deployment, job_id)
    deployment.figures["kill"] = f"{victim} at {done_at_kill}/{images} images"
    assert done_at_kill < images, "the processor was killed after the job had finished"
    assert final["status"] == "completed", final
    assert len(rows) == images and len({r["task_id"] for r in rows}) == images
    assert {r["perimeter"] for r in rows} == {256}
    deployment.compose("up", "-d", "--wait")  # the killed replica back, for the tests after this one


def released_at(deployment: Deployment, job_id: str) -> list[datetime]:
    async def read() -> list[datetime]:
        out = []
        admin = deployment.kafka_user("admin")  # the jobs topic is no downstream user's
        async for _, timestamp, value in read_topics(deployment.kafka, ["imagejobs.jobs"], admin):
            event = decode_event(value)
            if isinstance(event, JobReleased) and str(event.job_id) == job_id:
                out.append(datetime.fromtimestamp(timestamp / 1000, UTC))
        return out
    return asyncio.run(read())


def test_down_then_up_keeps_jobs_offsets_and_schedule(deployment: Deployment) -> None:
    done = [submit(deployment, json.loads((ROOT / "data" / "compose-example-job.json").read_text())),
            submit(deployment, slow_job(40, delay_ms=10))]
    for job_id in done:
        wait_final(deployment, job_id)
    before = {job_id: (status(deployment, job_id), results(deployment, job_id)) for job_id in done}
    due = datetime.now(UTC) + timedelta(seconds=75)
    later = submit(deployment, {**slow_job(5, delay_ms=10), "scheduled_time": due.isoformat()})
    releases_before = {job_id: released_at(deployment, job_id) for job_id in done}  # via EXTERNAL

    started = time.monotonic()
    deployment.compose("down")  # volumes kept
    deployment.compose("up", "-d", "--wait")
    deployment.figures["down_up_s"] = round(time.monotonic() - started, 1)

    assert datetime.now(UTC) < due, "the restart outlasted the schedule: the timing check would be void"
    assert status(deployment, later)["status"] == "scheduled"
    after = {job_id: (status(deployment, job_id), results(deployment, job_id)) for job_id in done}
    assert after == before
    final = wait_final(deployment, later, deadline_s=150)
    assert final["status"] == "completed" and len(results(deployment, later)) == 5
    releases = released_at(deployment, later)
    # a record's timestamp is whole milliseconds: a release in the due millisecond reads as before it
    due_ms = due.replace(microsecond=due.microsecond - due.microsecond % 1000)
    assert len(releases) == 1 and due_ms <= releases[0] < due + timedelta(seconds=5), (due, releases)
    assert {job_id: released_at(deployment, job_id) for job_id in done} == releases_before  # no re-release
    deployment.figures["jobs_checked_across_restart"] = len(done) + 1
    deployment.figures["lateness_after_restart_ms"] = round((releases[0] - due).total_seconds() * 1000)
