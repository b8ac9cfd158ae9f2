"""Forgetting finished jobs (shared/retention.py): the status service's expiry.

A job expires `JOB_RETENTION_S` after its status became final (`status_jobs.final_at`, set by
the fold), once that final status is on the status topic and no completion webhook of it is
still being retried. Its view row, outcomes, decisions and webhook rows go in one transaction,
and the compacted status topic gets a tombstone (key = job id, no value) so it forgets the job
too. A scheduled or ongoing job has no `final_at` and never expires.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from shared.db import transaction
from shared.retention import Deleted, Expiry, within_batch

# Oldest first, rows locked (SKIP LOCKED: another status instance takes others). A row not yet
# submitted (only a withdrawal or a stray event folded) has nothing on the status topic.
EXPIRED_JOBS = (
    "SELECT job_id, total_images FROM status_jobs AS j"
    " WHERE final_at < now() - make_interval(secs => %(older_than_s)s::float8)"
    " AND (emitted_status = status OR NOT submitted)"
    " AND NOT EXISTS (SELECT 1 FROM webhook_deliveries AS d WHERE d.job_id = j.job_id AND d.state = 'pending')"
    " ORDER BY final_at LIMIT %(batch)s FOR UPDATE SKIP LOCKED")
# What hangs on a job, then the job: every table of the status service that holds it.
DELETE_JOB_ROWS = {
    "status_outcomes": "DELETE FROM status_outcomes WHERE job_id = ANY(%s)",
    "webhook_attempts": "DELETE FROM webhook_attempts WHERE job_id = ANY(%s)",
    "webhook_deliveries": "DELETE FROM webhook_deliveries WHERE job_id = ANY(%s)",
    "status_commands": "DELETE FROM status_commands WHERE job_id = ANY(%s)",
    "status_jobs": "DELETE FROM status_jobs WHERE job_id = ANY(%s)",
}
TOMBSTONES_WITHIN_S = 10.0  # the rows stay locked meanwhile; past it the batch is tried again later


def expired_jobs(runtime: Any, status_topic: str, older_than_s: float) -> Expiry:
    async def expire(batch: int) -> dict[str, int]:
        return await expire_jobs(runtime, status_topic, older_than_s, batch)
    return Expiry("status_jobs", expire)


async def expire_jobs(runtime: Any, status_topic: str, older_than_s: float, batch: int) -> Deleted:
    """One batch of expired jobs, at most about `batch` rows of outcomes (a large job alone);
    `more_waiting` when the batch was cut there, so the round goes on at once (it would otherwise
    stop after one batch of some 90 five-image jobs a tick: far fewer than finish under load).

    The tombstones are published, and acknowledged, inside the transaction, before its commit:
    a crash or an error in between leaves the rows, and the next round publishes again (at
    least once). Published after the commit, a tombstone lost then could never be sent again."""
    deleted = Deleted()
    async with transaction(runtime.pool) as conn:
        candidates = await (await conn.execute(
            EXPIRED_JOBS, {"older_than_s": older_than_s, "batch": batch})).fetchall()
        job_ids = within_batch([(job_id, max(1, images)) for job_id, images in candidates], batch)
        if not job_ids:
            return deleted
        await publish_tombstones(runtime.producer, status_topic, job_ids)
        for table, sql in DELETE_JOB_ROWS.items():
            deleted[table] = (await conn.execute(sql, (job_ids,))).rowcount
    deleted.more_waiting = len(job_ids) < len(candidates)
    return deleted


async def publish_tombstones(producer: Any, topic: str, job_ids: list[UUID]) -> None:
    """A record with no value for each job: compaction then drops every status record of it."""
    sends = [await producer.send(topic, None, key=str(job_id).encode()) for job_id in job_ids]
    async with asyncio.timeout(TOMBSTONES_WITHIN_S):
        await asyncio.gather(*sends)
