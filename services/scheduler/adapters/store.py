"""The durable schedule, `scheduler_jobs`: the scheduler's SQL, and nothing else.

A job's row moves `pending` -> `dispatching` (its `JobReleased` acknowledged; its tasks are
handed out as the processors take work, `dispatched` counting those acknowledged) -> `released`
(all of them), or `pending` -> `cancelled` (a cancel accepted by its release owner). A job
whose tasks all went before its release was marked goes straight to `released`. `finished_at`
is when a row became `released` or `cancelled`: retention counts from it (`EXPIRE_FINISHED`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from services.scheduler.domain import DispatchRow, Stored
from shared.admissions import admit
from shared.db import columns, transaction
from shared.events import JobSubmitted
from shared.runtime import Runtime


async def store_submitted(pool: AsyncConnectionPool, submitted: Sequence[tuple[int, JobSubmitted]]) -> Stored:
    """The submitted jobs, admitted and stored in one transaction (a redelivered one changes
    nothing). A job stored before and still pending is held again (the timer ignores it if it
    holds it already: a partition taken over may have been loaded before that job's row was
    committed); one released or cancelled since is not (a submit re-published by an
    Idempotency-Key retry, or redelivered, must not run the job twice)."""
    async with transaction(pool) as conn:
        withdrawn = await admit(conn, [e.job_id for _, e in submitted])
        kept = [(p, e) for p, e in submitted if e.job_id not in withdrawn]
        if not kept:
            return Stored(withdrawn, set())
        cur = await conn.execute(
            "INSERT INTO scheduler_jobs (job_id, partition, due_at, event, total_images, tenant, priority)"
            " SELECT * FROM unnest(%b::uuid[], %b::int[], %b::timestamptz[], %b::jsonb[], %b::int[],"
            " %b::text[], %b::smallint[]) ON CONFLICT (job_id) DO NOTHING RETURNING job_id",
            columns((e.job_id, p, e.scheduled_time, e.model_dump_json(), e.total_images, e.owner, e.priority)
                    for p, e in kept))
        inserted = {row[0] for row in await cur.fetchall()}
        seen = [e.job_id for _, e in kept if e.job_id not in inserted]
        if not seen:
            return Stored(withdrawn, set())
        rows = await (await conn.execute("SELECT job_id FROM scheduler_jobs WHERE job_id = ANY(%s)"
                                         " AND state <> 'pending'", (seen,))).fetchall()
    return Stored(withdrawn, {row[0] for row in rows})


async def load_pending(pool: AsyncConnectionPool, partitions: list[int]) -> list[tuple[UUID, datetime, int, int]]:
    """(job_id, due_at, partition, dispatched) of the partitions' pending jobs (a job whose
    release was not acknowledged is still pending: it is released again, with the same task
    ids, and dispatched on from where it was)."""
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT job_id, due_at, partition, dispatched FROM scheduler_jobs"
                                 " WHERE state = 'pending' AND partition = ANY(%s)", (partitions,))
        return await cur.fetchall()


async def load_dispatching(pool: AsyncConnectionPool, partitions: list[int]) -> list[DispatchRow]:
    """The partitions' released jobs whose tasks are not all dispatched yet."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT job_id, partition, tenant, priority, total_images, dispatched FROM scheduler_jobs"
            " WHERE state = 'dispatching' AND partition = ANY(%s)", (partitions,))
        return [DispatchRow(*row) for row in await cur.fetchall()]


async def job_events(pool: AsyncConnectionPool, job_ids: list[UUID]) -> list[str]:
    """The stored `JobSubmitted` (JSON) of those jobs, whatever their state."""
    async with pool.connection() as conn:
        rows = await (await conn.execute("SELECT event::text FROM scheduler_jobs WHERE job_id = ANY(%s)",
                                         (job_ids,))).fetchall()
    return [r[0] for r in rows]


# Rows are locked in job id order before an UPDATE ... FROM unnest(...) touches them: the join
# takes its rows in no set order, so a release marking jobs and a dispatch round storing cursors
# of some of the same jobs deadlocked now and then under load (retried, but a wasted round trip).
LOCK_IN_ORDER = "SELECT 1 FROM scheduler_jobs WHERE job_id = ANY(%b::uuid[]) ORDER BY job_id FOR UPDATE"


async def record_dispatched(pool: AsyncConnectionPool, cursors: dict[UUID, int]) -> None:
    """How many of each job's tasks are acknowledged by Kafka (never moves back)."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(LOCK_IN_ORDER, (list(cursors),))
        await conn.execute(
            "UPDATE scheduler_jobs AS j SET dispatched = GREATEST(j.dispatched, u.n),"
            " state = CASE WHEN j.state = 'dispatching' AND GREATEST(j.dispatched, u.n) >= j.total_images"
            " THEN 'released' ELSE j.state END,"
            " finished_at = CASE WHEN j.state = 'dispatching' AND GREATEST(j.dispatched, u.n) >= j.total_images"
            " THEN now() ELSE j.finished_at END"
            " FROM unnest(%b::uuid[], %b::int[]) AS u(job_id, n) WHERE j.job_id = u.job_id",
            columns(cursors.items()))


async def pending_events(pool: AsyncConnectionPool, job_ids: list[UUID]) -> list[str]:
    """The stored `JobSubmitted` (JSON) of those jobs that are still pending."""
    async with pool.connection() as conn:
        rows = await (await conn.execute(
            "SELECT event::text FROM scheduler_jobs WHERE job_id = ANY(%s) AND state = 'pending'",
            (job_ids,))).fetchall()
    return [r[0] for r in rows]


async def mark_released(pool: AsyncConnectionPool, jobs: Sequence[JobSubmitted]) -> None:
    """The jobs are released. What a restart needs to dispatch their remaining tasks is filled
    in where the row lacks it (a row stored before fair dispatch, or seeded without it)."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(LOCK_IN_ORDER, ([e.job_id for e in jobs],))
        await conn.execute(
            "UPDATE scheduler_jobs AS j SET released_at = %s,"
            " state = CASE WHEN j.dispatched >= u.total THEN 'released' ELSE 'dispatching' END,"
            " finished_at = CASE WHEN j.dispatched >= u.total THEN now() END,"
            " total_images = COALESCE(j.total_images, u.total), tenant = COALESCE(j.tenant, u.tenant)"
            " FROM unnest(%b::uuid[], %b::int[], %b::text[]) AS u(job_id, total, tenant)"
            " WHERE j.job_id = u.job_id AND j.state = 'pending'",
            (datetime.now(UTC), *columns((e.job_id, e.total_images, e.owner) for e in jobs)))


# Retention (shared/retention.py): a released or cancelled job's row and its commands' decisions,
# `older_than_s` after it finished; never a pending or dispatching one. SKIP LOCKED: another
# scheduler instance, or this one's release path, is never waited for.
EXPIRE_FINISHED = (
    "WITH gone AS (DELETE FROM scheduler_jobs WHERE job_id = ANY(ARRAY("
    "SELECT job_id FROM scheduler_jobs WHERE finished_at < now() - make_interval(secs => %(older_than_s)s::float8)"
    " AND state IN ('released', 'cancelled') ORDER BY finished_at LIMIT %(batch)s FOR UPDATE SKIP LOCKED))"
    " RETURNING job_id),"
    " commands AS (DELETE FROM scheduler_commands WHERE job_id IN (SELECT job_id FROM gone) RETURNING 1)"
    " SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM commands)")


async def expire_finished(pool: AsyncConnectionPool, older_than_s: float, batch: int) -> dict[str, int]:
    """One batch of finished jobs forgotten, with their decisions (one statement: one transaction)."""
    async with pool.connection() as conn:
        row = await (await conn.execute(EXPIRE_FINISHED, {"older_than_s": older_than_s, "batch": batch})).fetchone()
    jobs, commands = row if row else (0, 0)
    return {"scheduler_jobs": jobs, "scheduler_commands": commands}


class ScheduleTable:
    """`scheduler_jobs` on the service's pool: the ports SubmittedJobs, ReleaseStore and
    DispatchStore (services/scheduler/ports.py)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime  # its pool exists once the runtime has started

    async def store(self, submitted: Sequence[tuple[int, JobSubmitted]]) -> Stored:
        return await store_submitted(self.runtime.pool, submitted)

    async def load_pending(self, partitions: list[int]) -> list[tuple[UUID, datetime, int, int]]:
        return await load_pending(self.runtime.pool, partitions)

    async def pending_events(self, job_ids: list[UUID]) -> list[str]:
        return await pending_events(self.runtime.pool, job_ids)

    async def mark_released(self, jobs: Sequence[JobSubmitted]) -> None:
        await mark_released(self.runtime.pool, jobs)

    async def load_dispatching(self, partitions: list[int]) -> list[DispatchRow]:
        return await load_dispatching(self.runtime.pool, partitions)

    async def job_events(self, job_ids: list[UUID]) -> list[str]:
        return await job_events(self.runtime.pool, job_ids)

    async def record_dispatched(self, cursors: dict[UUID, int]) -> None:
        await record_dispatched(self.runtime.pool, cursors)
