"""Burst: many jobs due at one instant, timed from the due time until the status API reports
every job final (issue 7, goal 1), the way a client would observe it.

The jobs are submitted ahead of their shared `scheduled_time`, so submitting is not timed.
Before the due time every job is confirmed known to the status view. From the due time,
completion is observed by asking the status API every 50 ms whether any job is still listed
`scheduled` or `ongoing` (`GET /api/jobs?status=...&limit=1`, two requests a poll): cheap for
the status service, and the end is seen within one poll of when it happens. Each job's own
status (`GET /api/status/{id}`) is then read once to confirm it is final.

(Until session 5 each job was polled in order, 8 at a time, stopping at the first one still
running: near the end hundreds of jobs finish out of order and were found one chunk at a
time, which put up to ~0.4 s between the last job's completion and its observation.)
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from shared.events import FINAL_STATUSES
from shared.machine import busy_share, machine_cpu_s
from tests.bench.images import fresh_images


def burst_bodies(image_base: str, jobs: int, per_job: int, due: datetime,
                 per_visit: int = 5, first_image: int = 0) -> list[dict[str, Any]]:
    """`jobs` jobs of `per_job` distinct image URLs each (`/img/{i}.jpg` from `first_image`),
    all due at `due`."""
    bodies = []
    for j in range(jobs):
        urls = [f"{image_base}/img/{first_image + j * per_job + i}.jpg" for i in range(per_job)]
        visits = [{"store_id": "S00339218", "visit_time": "10:00", "image_url": urls[v:v + per_visit]}
                  for v in range(0, per_job, per_visit)]
        bodies.append({"count": len(visits), "visits": visits, "scheduled_time": due.isoformat()})
    return bodies


async def submit_all(ingest: str, bodies: list[dict[str, Any]], connections: int = 32) -> list[str]:
    """Submit every body (bounded concurrency); returns the job ids in order."""
    sem = asyncio.Semaphore(connections)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        async def one(body: dict[str, Any]) -> str:
            async with sem, session.post(f"{ingest}/processJob", json=body) as response:
                payload = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"submit failed: {response.status} {payload}")
                return str(payload["job_id"])
        return list(await asyncio.gather(*(one(b) for b in bodies)))


async def statuses(session: aiohttp.ClientSession, status_url: str, job_ids: list[str]) -> dict[str, str]:
    """job_id -> status, read one job at a time (`GET /api/status/{id}`)."""
    async def status_of(job_id: str) -> str:
        async with session.get(f"{status_url}/api/status/{job_id}") as response:
            if response.status != 200:  # 404 not folded yet; 503 retry shortly
                return "unknown"
            return str((await response.json())["status"])
    return dict(zip(job_ids, await asyncio.gather(*(status_of(j) for j in job_ids)), strict=True))


async def any_running(session: aiohttp.ClientSession, status_url: str) -> bool:
    """Does the status API list any job still `scheduled` or `ongoing`? (two requests)"""
    async def listed(status: str) -> bool:
        async with session.get(f"{status_url}/api/jobs", params={"status": status, "limit": "1"}) as response:
            return response.status != 200 or bool((await response.json())["jobs"])  # unsure: running
    return any(await asyncio.gather(listed("scheduled"), listed("ongoing")))


async def wait_all_known(status_url: str, job_ids: list[str], by_mono: float) -> None:
    """Before the due time (untimed): every job is in the status view, so that "none listed as
    running" below can only mean "all final"."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:
        pending = job_ids
        while pending:
            if time.monotonic() > by_mono:
                raise RuntimeError(f"{len(pending)} jobs not in the status view by the due time: raise lead_s")
            seen = await statuses(session, status_url, pending)
            pending = [j for j, s in seen.items() if s == "unknown"]
            if pending:
                await asyncio.sleep(0.05)


async def wait_all_final(status_url: str, job_ids: list[str], deadline_s: float = 600,
                         pause_s: float = 0.05) -> tuple[float, dict[str, str]]:
    """Poll until every job is final; returns (monotonic time the status API first reported it,
    job_id -> final status). Each poll asks whether any job is still listed `scheduled` or
    `ongoing`; the benchmark's stack runs nothing else and every job is known to the view
    (`wait_all_known`), so none listed means all final. Each job's own status is then read once
    to confirm it and count the outcomes (had one not been final, polling would go on)."""
    end = time.monotonic() + deadline_s
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as session:
        while True:
            if time.monotonic() > end:
                raise TimeoutError(f"jobs not final after {deadline_s}s")
            if not await any_running(session, status_url):
                seen_at = time.monotonic()
                finals = await statuses(session, status_url, job_ids)
                if all(s in FINAL_STATUSES for s in finals.values()):
                    return seen_at, finals
            await asyncio.sleep(pause_s)


async def run_burst(ingest: str, status_url: str, image_base: str, jobs: int = 1000,
                    per_job: int = 10, lead_s: float = 8.0) -> dict[str, Any]:
    """Submit `jobs` × `per_job` images due `lead_s` from now; images/s from the due time until
    the status API reports every job final."""
    due = datetime.now(UTC) + timedelta(seconds=lead_s)
    bodies = burst_bodies(image_base, jobs, per_job, due, first_image=fresh_images(jobs * per_job))
    started = time.monotonic()
    job_ids = await submit_all(ingest, bodies)
    submitted_s = time.monotonic() - started
    due_mono = time.monotonic() + (due - datetime.now(UTC)).total_seconds()
    if due_mono < time.monotonic():
        raise RuntimeError(f"submitting took {submitted_s:.1f}s, past the due time: raise lead_s")
    await wait_all_known(status_url, job_ids, due_mono)
    await asyncio.sleep(max(0.0, due_mono - time.monotonic()))
    busy_before = machine_cpu_s()
    last, finals = await wait_all_final(status_url, job_ids)
    busy_after = machine_cpu_s()
    span = last - due_mono
    images = jobs * per_job
    outcome = {s: sum(1 for v in finals.values() if v == s) for s in sorted(set(finals.values()))}
    cpu_share = busy_share(busy_before, busy_after)
    return {"images": images, "jobs": jobs, "seconds": round(span, 2), "machine_cpu_busy": round(cpu_share, 2),
            "images_per_s": round(images / span, 1), "submit_s": round(submitted_s, 2), "outcomes": outcome}


