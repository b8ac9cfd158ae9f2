"""The scheduler's dispatch rows in PostgreSQL (services/scheduler/adapters/store.py): a released
job whose tasks are not all dispatched is found again on taking over its partition, from its
cursor, including a job stored before fair dispatch existed (no total, no tenant in its row)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from uuid import uuid4

import psycopg

from services.scheduler.adapters.store import load_dispatching, mark_released, record_dispatched, store_submitted
from shared.db import make_pool
from shared.events import JobSubmitted, Visit
from tests.support.stack import Infra, Stack


def _job(images: int, owner: str | None = "team-a", priority: int = 2) -> JobSubmitted:
    return JobSubmitted(job_id=uuid4(), scheduled_time=datetime.now(UTC), owner=owner, priority=priority,
                        visits=(Visit(store_id="S1", image_urls=tuple(f"http://x/{i}" for i in range(images))),))


def test_released_jobs_are_found_again_with_their_cursor_legacy_rows_too(infra: Infra) -> None:
    stack = Stack(infra)  # a database of its own, migrated; no services
    fresh, legacy, done = _job(10), _job(7, owner="a1b2c3"), _job(3)
    with psycopg.connect(stack.database_url, autocommit=True) as conn:  # as the scheduler before issue 18 wrote it
        conn.execute("INSERT INTO scheduler_jobs (job_id, partition, due_at, event) VALUES (%s, 2, %s, %s)",
                     (legacy.job_id, legacy.scheduled_time, legacy.model_dump_json()))

    async def scenario() -> list[tuple[object, ...]]:
        pool = make_pool(stack.database_url)
        await pool.open()
        try:
            await store_submitted(pool, [(2, fresh), (2, done)])
            await mark_released(pool, [fresh, legacy, done])
            await record_dispatched(pool, {fresh.job_id: 4, legacy.job_id: 5, done.job_id: 3})
            await record_dispatched(pool, {fresh.job_id: 2})  # an older round confirmed late: no step back
            rows = await load_dispatching(pool, [2])
            return sorted((r.job_id, r.tenant, r.priority, r.total, r.dispatched) for r in rows)
        finally:
            await pool.close()
    found = asyncio.run(scenario())
    assert found == sorted([(fresh.job_id, "team-a", 2, 10, 4), (legacy.job_id, "a1b2c3", 3, 7, 5)])
    with psycopg.connect(stack.database_url) as conn:  # all of `done` went: released, not dispatching
        assert conn.execute("SELECT state FROM scheduler_jobs WHERE job_id = %s", (done.job_id,)).fetchone() == (
            "released",)
