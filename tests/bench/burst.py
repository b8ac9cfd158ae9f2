"""Burst: many jobs due at one instant, timed from the due time until the status API reports
every job final (DESIGN §6, issue 7 goal 1), the way a client would observe it.

The jobs are submitted ahead of their shared `scheduled_time`, so submitting is not timed.
Completion is observed by polling `GET /api/status/{id}` over a few keep-alive connections:
a job reported final is not asked again, and a sweep stops at the first job still running
(jobs finish roughly in release order), so polling costs the status service little and the
end is seen within one poll interval of when it happens.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

FINAL = {"completed", "failed", "cancelled"}


def burst_bodies(image_base: str, jobs: int, per_job: int, due: datetime,
                 per_visit: int = 5) -> list[dict[str, Any]]:
    """`jobs` jobs of `per_job` distinct image URLs each (`/img/{i}.jpg`), all due at `due`."""
    bodies = []
    for j in range(jobs):
        urls = [f"{image_base}/img/{j * per_job + i}.jpg" for i in range(per_job)]
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


async def wait_all_final(status_url: str, job_ids: list[str], deadline_s: float = 600,
                         connections: int = 8, pause_s: float = 0.1) -> tuple[float, dict[str, str]]:
    """Poll until every job is final; returns (monotonic time the last one was seen final,
    job_id -> final status)."""
    pending = list(job_ids)
    finals: dict[str, str] = {}
    last_seen = time.monotonic()
    end = last_seen + deadline_s
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        async def status_of(job_id: str) -> str:
            async with session.get(f"{status_url}/api/status/{job_id}") as response:
                return str((await response.json())["status"])
        while pending:
            if time.monotonic() > end:
                raise TimeoutError(f"{len(pending)} jobs not final after {deadline_s}s")
            # a sweep: `connections` jobs at a time, in order, until one is still running
            still: list[str] = []
            for start in range(0, len(pending), connections):
                chunk = pending[start:start + connections]
                statuses = await asyncio.gather(*(status_of(j) for j in chunk))
                for job_id, status in zip(chunk, statuses, strict=True):
                    if status in FINAL:
                        finals[job_id] = status
                        last_seen = time.monotonic()
                    else:
                        still.append(job_id)
                if len(still) > 0:
                    still.extend(pending[start + connections:])
                    break
            pending = still
            if pending:
                await asyncio.sleep(pause_s)
    return last_seen, finals


async def run_burst(ingest: str, status_url: str, image_base: str, jobs: int = 1000,
                    per_job: int = 10, lead_s: float = 8.0) -> dict[str, Any]:
    """Submit `jobs` × `per_job` images due `lead_s` from now; images/s from the due time until
    the status API reports every job final."""
    due = datetime.now(UTC) + timedelta(seconds=lead_s)
    bodies = burst_bodies(image_base, jobs, per_job, due)
    started = time.monotonic()
    job_ids = await submit_all(ingest, bodies)
    submitted_s = time.monotonic() - started
    due_mono = time.monotonic() + (due - datetime.now(UTC)).total_seconds()
    if due_mono < time.monotonic():
        raise RuntimeError(f"submitting took {submitted_s:.1f}s, past the due time: raise lead_s")
    await asyncio.sleep(max(0.0, due_mono - time.monotonic()))
    busy_before = _cpu_busy()
    last, finals = await wait_all_final(status_url, job_ids)
    busy_after = _cpu_busy()
    span = last - due_mono
    images = jobs * per_job
    outcome = {s: sum(1 for v in finals.values() if v == s) for s in sorted(set(finals.values()))}
    cpu_share = (busy_after[0] - busy_before[0]) / max(1, busy_after[1] - busy_before[1])
    return {"images": images, "jobs": jobs, "seconds": round(span, 2), "machine_cpu_busy": round(cpu_share, 2),
            "images_per_s": round(images / span, 1), "submit_s": round(submitted_s, 2), "outcomes": outcome}


def _cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat (0, 0 where there is none)."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except OSError:
        return (0, 0)
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle, sum(fields))
