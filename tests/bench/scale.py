"""Scale (issue 7 goal 6): a million jobs pending. The schedule and the status view are seeded
straight into PostgreSQL with COPY (submitting a million jobs through ingest would take most
of an hour on two cores and measure ingest, not this); then a scheduler is started cold and
measured: time from its start to the first release of a job already due, its memory once the
schedule is loaded, and status lookups against a view of a million jobs."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import psycopg

from tests.support.stack import Stack

PARTITIONS = 6  # KAFKA_PARTITIONS: the jobs topic's partitions, which the scheduler owns rows by


def _event(job_id: uuid.UUID, due: datetime, image_url: str) -> str:
    return json.dumps({"type": "JobSubmitted", "schema_version": 1, "job_id": str(job_id),
                       "event_id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC).isoformat(),
                       "scheduled_time": due.isoformat(), "owner": None,
                       "visits": [{"store_id": "S00339218", "image_urls": [image_url], "visit_time": "10:00"}]})


def seed(database_url: str, pending: int, due_now: int, image_url: str) -> list[uuid.UUID]:
    """`pending` jobs due tomorrow and `due_now` jobs already due, in the schedule and the view;
    returns the ids of a sample of them (for lookups)."""
    now = datetime.now(UTC)
    later = now + timedelta(days=1)
    sample: list[uuid.UUID] = []
    with psycopg.connect(database_url) as schedule_conn, psycopg.connect(database_url) as view_conn, \
            schedule_conn.cursor().copy("COPY scheduler_jobs (job_id, partition, due_at, event) FROM STDIN") as jobs, \
            view_conn.cursor().copy("COPY status_jobs (job_id, submitted, scheduled_time, total_images) FROM STDIN") \
            as view:
        for i in range(pending + due_now):
            job_id = uuid.uuid4()
            due = now if i < due_now else later + timedelta(milliseconds=i)
            jobs.write_row((job_id, i % PARTITIONS, due, _event(job_id, due, image_url)))
            view.write_row((job_id, True, due, 1))
            if i % 500 == 0:
                sample.append(job_id)
    return sample


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def first_release_seconds(database_url: str, started: float, deadline_s: float = 300) -> float:
    """Seconds from `started` (monotonic) until a seeded due job is marked released."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() - started < deadline_s:
            released = "SELECT 1 FROM scheduler_jobs WHERE state IN ('released', 'dispatching') LIMIT 1"
            if conn.execute(released).fetchone():
                return time.monotonic() - started
            time.sleep(0.05)
    raise TimeoutError("no release within the deadline")


async def lookups(status_url: str, job_ids: list[uuid.UUID], n: int = 2000) -> list[float]:
    rng = random.Random(5)
    out = []
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            job_id = rng.choice(job_ids)
            started = time.perf_counter()
            async with session.get(f"{status_url}/api/status/{job_id}") as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"lookup of {job_id}: {response.status}")
            out.append(time.perf_counter() - started)
    return out


def measure_scale(stack: Stack, image_url: str, pending: int = 1_000_000) -> dict[str, Any]:
    seeding = time.monotonic()
    sample = seed(stack.database_url, pending, due_now=10, image_url=image_url)
    seeded_s = time.monotonic() - seeding
    started = time.monotonic()
    scheduler = stack.start_service("scheduler")
    first = first_release_seconds(stack.database_url, started)
    status = stack.start_service("status")
    stack.wait_ready(status)
    rss = rss_mib(scheduler.process.pid)
    latencies = sorted(asyncio.run(lookups(status.url, sample)))
    return {"pending": pending, "seed_s": round(seeded_s, 1), "restart_to_first_release_s": round(first, 1),
            "scheduler_rss_mib": round(rss, 0),
            "status_lookup_p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
            "status_lookup_p99_ms": round(1000 * latencies[int(0.99 * len(latencies))], 2)}
