"""The durable schedule, `scheduler_jobs`: the scheduler's SQL, and nothing else.

A job's row moves `pending` -> `released` (every record of its release acknowledged), or
`pending` -> `cancelled` (a cancel accepted by its release owner).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from shared.admissions import admit
from shared.db import columns, transaction
from shared.events import JobSubmitted


async def store_submitted(pool: AsyncConnectionPool, submitted: Sequence[tuple[int, JobSubmitted]]) -> set[UUID]:
    """The submitted jobs, admitted and stored in one transaction (a redelivered one changes
    nothing); returns the ids of those ingest withdrew first, which are not stored."""
    async with transaction(pool) as conn:
        withdrawn = await admit(conn, [e.job_id for _, e in submitted])
        kept = [(p, e) for p, e in submitted if e.job_id not in withdrawn]
        if kept:
            await conn.execute(
                "INSERT INTO scheduler_jobs (job_id, partition, due_at, event)"
                " SELECT * FROM unnest(%s::uuid[], %s::int[], %s::timestamptz[], %s::jsonb[])"
                " ON CONFLICT (job_id) DO NOTHING",
                columns((e.job_id, p, e.scheduled_time, e.model_dump_json()) for p, e in kept))
    return withdrawn


async def load_pending(pool: AsyncConnectionPool, partitions: list[int]) -> list[tuple[UUID, datetime, int]]:
    """(job_id, due_at, partition) of the partitions' pending jobs (a job whose release was not
    acknowledged is still pending: it is released again, with the same task ids)."""
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT job_id, due_at, partition FROM scheduler_jobs"
                                 " WHERE state = 'pending' AND partition = ANY(%s)", (partitions,))
        return await cur.fetchall()


async def pending_events(pool: AsyncConnectionPool, job_ids: list[UUID]) -> list[str]:
    """The stored `JobSubmitted` (JSON) of those jobs that are still pending."""
    async with pool.connection() as conn:
        rows = await (await conn.execute(
            "SELECT event::text FROM scheduler_jobs WHERE job_id = ANY(%s) AND state = 'pending'",
            (job_ids,))).fetchall()
    return [r[0] for r in rows]


async def mark_released(pool: AsyncConnectionPool, job_ids: list[UUID]) -> None:
    async with pool.connection() as conn:
        await conn.execute("UPDATE scheduler_jobs SET state = 'released', released_at = %s"
                           " WHERE job_id = ANY(%s) AND state = 'pending'", (datetime.now(UTC), job_ids))
