"""Cancels racing the release, decided by the release owner: hundreds of jobs falling due at
one instant, each cancelled within +-150 ms of it; then the same with the scheduler killed
with -9 in the middle of the race. Every answer must be true:

- 200 `cancelled`: the job reads `cancelled` at once and for ever, no task was ever produced
  for it and it has no result row;
- 409: the job was released and ends `completed` or `failed` with one result per image.
"""

from __future__ import annotations

import asyncio
import random
import signal
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import psycopg

from tests.support.client import Client
from tests.support.invariants import Batch, assert_promises_kept, read_all
from tests.support.rawhttp import RawConnection
from tests.support.stack import Stack

JOBS = 240
SPREAD_S = 0.150


async def _submit_all(client: Client, due: datetime, rng: random.Random) -> Batch:
    batch = Batch()
    async with httpx.AsyncClient(timeout=30) as http:
        async def one(_: int) -> None:
            n = rng.randint(1, 3)
            urls = [client.image(rng.randint(10, 300), rng.randint(10, 300)) for _ in range(n)]
            body = {"count": 1, "scheduled_time": due.isoformat(),
                    "visits": [{"store_id": "S00339218", "image_url": urls, "visit_time": "10:00"}]}
            response = await http.post(client.ingest + "/processJob", json=body)
            assert response.status_code == 200, response.text
            job_id = response.json()["job_id"]
            batch.tasks[job_id] = {f"{job_id}:0:{i}" for i in range(n)}
            batch.scheduled[job_id] = due
        await asyncio.gather(*(one(i) for i in range(JOBS)))
    return batch


async def _cancel_all(client: Client, job_ids: list[str], due: datetime, rng: random.Random,
                      during: Any = None, early: int = 0) -> dict[str, tuple[int, Any]]:
    """Each job cancelled at its own instant in due +- SPREAD_S (the first `early` ones 1.5 s
    before); `during` runs at the due time. A 504 (no decision yet: the scheduler is
    restarting) is asked again, as a client would."""
    answers: dict[str, tuple[int, Any]] = {}
    early_ids = set(job_ids[:early])
    # one connection per job, opened before the race: at the instant only the request is sent
    connections = {j: await RawConnection.open(client.status_url) for j in job_ids}

    async def one(job_id: str) -> None:
        offset = -1.5 if job_id in early_ids else rng.uniform(-SPREAD_S, SPREAD_S)
        await _sleep_until(due + timedelta(seconds=offset))
        for _ in range(5):
            answers[job_id] = await connections[job_id].request("DELETE", f"/api/jobs/{job_id}")
            if answers[job_id][0] != 504:
                return

    async def fault() -> None:
        await _sleep_until(due)
        await asyncio.to_thread(during)
    try:
        await asyncio.gather(*(one(j) for j in job_ids), *([fault()] if during else []))
    finally:
        for connection in connections.values():
            await connection.close()
    return answers


async def _sleep_until(when: datetime) -> None:
    await asyncio.sleep(max(0.0, (when - datetime.now(UTC)).total_seconds()))


def _race(client: Client, rng: random.Random, during: Any = None, early: int = 0) -> dict[str, int]:
    due = datetime.now(UTC) + timedelta(seconds=8)  # room for 240 submits on a busy machine
    batch = asyncio.run(_submit_all(client, due, rng))
    assert datetime.now(UTC) < due - timedelta(seconds=2), "submitting took too long to race"
    answers = asyncio.run(_cancel_all(client, list(batch.tasks), due, rng, during, early))
    codes = {job: status for job, (status, _) in answers.items()}
    assert set(codes.values()) <= {200, 409}, {j: a for j, a in answers.items() if a[0] not in (200, 409)}
    accepted = [j for j, c in codes.items() if c == 200]
    refused = [j for j, c in codes.items() if c == 409]
    for job in accepted:  # read-your-writes: the answer is what a read says, at once
        assert answers[job][1]["status"] == "cancelled"
        assert client.status(job).json()["status"] == "cancelled", job
    for job in refused:
        assert answers[job][1]["error"].split(";")[0] in (
            "job is already ongoing", "job is already completed", "job is already failed"), answers[job]
    ran = Batch({j: batch.tasks[j] for j in refused}, {j: due for j in refused})
    report = assert_promises_kept(client, ran) if refused else {"jobs": 0, "images": 0}
    _assert_cancelled_never_ran(client, accepted)
    print(f"\ncancels racing the release: {len(accepted)} accepted (never released),"
          f" {len(refused)} refused (ran: {report['jobs']} jobs, {report['images']} images)")
    # the racing cancels' split depends on how fast this machine is at the due instant (it is
    # printed); the early ones must all be accepted, and some racing ones must come too late
    assert len(accepted) >= early and refused, "the cancels did not straddle the release"
    assert set(list(batch.tasks)[:early]) <= set(accepted), "a cancel made 1.5 s ahead was refused"
    return {"accepted": len(accepted), "refused": len(refused)}


def _assert_cancelled_never_ran(client: Client, accepted: list[str]) -> None:
    events = read_all(client, ["tasks", "jobs"])
    cancelled = set(accepted)
    tasks = {str(e.job_id) for _, e in events["tasks"]} & cancelled
    assert not tasks, f"{len(tasks)} cancelled jobs had tasks produced"
    released = {str(e.job_id) for _, e in events["jobs"] if e.type == "JobReleased"} & cancelled
    assert not released, f"{len(released)} cancelled jobs were released"
    with psycopg.connect(client.stack.database_url) as conn:
        rows = conn.execute("SELECT count(*) FROM processor_results WHERE job_id = ANY(%s)",
                            ([UUID(j) for j in accepted],)).fetchone()
    assert rows == (0,), "cancelled jobs have result rows"
    for job in accepted:  # still cancelled after everything else has finished
        assert client.status(job).json()["status"] == "cancelled", job


def test_cancels_racing_the_release_are_answered_truthfully(fault_client: Client, rng: random.Random) -> None:
    _race(fault_client, rng, early=10)  # ten cancelled 1.5 s ahead: accepted, whatever the load


def test_cancels_racing_the_release_while_the_scheduler_is_killed(fault_client: Client,
                                                                  rng: random.Random) -> None:
    stack: Stack = fault_client.stack
    scheduler = next(p for p in stack.processes if p.name == "scheduler" and p.process.poll() is None)
    # after the restart, jobs already due when reloaded refuse cancels (the dead process may have
    # released them), so the accepted ones of this race are mostly the early ones: they must stay
    # cancelled through the crash and the reload
    _race(fault_client, rng, during=lambda: stack.restart(scheduler, signal.SIGKILL), early=20)
