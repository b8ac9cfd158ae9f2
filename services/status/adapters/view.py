"""The status view in PostgreSQL: the one fold of the jobs and results topics, and the reads
the API makes of it. SQL lives here and nowhere else in the service; reads return typed rows.

`fold(conn, events)` is how events change the view (in a few set-based statements): flags are
set, outcomes are unique by `task_id` and counters move only for new outcome rows, so applying
a batch twice, or in any order or batching, gives the same view; the status is then derived
by `domain.derive_status`. The projector runs it with the consumed offsets in one
transaction; the test suite replays the topics through it to check the live view.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from psycopg import AsyncConnection

from services.status.domain import Effects, JobRow, derive_status, effects_of
from shared.db import columns
from shared.events import FINAL_STATUSES, ImageFailed, ImageSucceeded
from shared.webhooks import webhook_id_for

T = TypeVar("T")
CONSUMER = "status"  # the name its offsets are stored under in consumer_offsets


# the columns a JobRow is read from, in its field order
JOB_COLUMNS = "job_id, status, scheduled_time, total_images, succeeded, failed, owner, priority, dispatched"


async def fold(conn: AsyncConnection[Any], events: list[Any]) -> int:
    """Apply a batch of events to the view and recompute the status of the jobs it touched;
    returns how many webhook deliveries that created (see `refresh_status`)."""
    effects = effects_of(events)
    await write_effects(conn, effects)
    return await refresh_status(conn, effects.touched())


async def write_effects(conn: AsyncConnection[Any], effects: Effects) -> None:
    async with conn.cursor() as cur:
        if effects.submitted:
            await cur.execute(UPSERT_SUBMITTED, columns(
                (e.job_id, e.owner, e.scheduled_time, e.total_images, e.occurred_at, e.priority, e.callback_url)
                for e in effects.submitted.values()))
        for column, job_ids in (("released", effects.released), ("cancelled", effects.cancelled),
                                ("withdrawn", effects.withdrawn)):
            if job_ids:
                await cur.execute(
                    f"INSERT INTO status_jobs (job_id, {column}) SELECT j, true FROM unnest(%b::uuid[]) AS u(j)"
                    f" ON CONFLICT (job_id) DO UPDATE SET {column} = true", (list(job_ids),))
        if effects.dispatched:
            await cur.execute(
                "INSERT INTO status_jobs (job_id, dispatched) SELECT * FROM unnest(%b::uuid[], %b::int[])"
                " ON CONFLICT (job_id) DO UPDATE"
                " SET dispatched = GREATEST(status_jobs.dispatched, EXCLUDED.dispatched)",
                columns(effects.dispatched.items()))
        if effects.outcomes:
            await cur.execute(INSERT_OUTCOMES, columns(_outcome_row(e) for e in effects.outcomes.values()))
        if effects.moved:
            await cur.execute(
                "UPDATE status_jobs AS s SET scheduled_time = u.t, updated_at = now()"
                " FROM unnest(%b::uuid[], %b::timestamptz[]) AS u(j, t) WHERE s.job_id = u.j",
                columns(effects.moved.items()))
        if effects.decisions:  # in the same transaction as the view they change: answered means readable
            await cur.execute(
                "INSERT INTO status_commands (command_id, job_id, accepted, state)"
                " SELECT * FROM unnest(%b::uuid[], %b::uuid[], %b::boolean[], %b::text[])"
                " ON CONFLICT (command_id) DO NOTHING", columns((c, *d) for c, d in effects.decisions.items()))


UPSERT_SUBMITTED = (
    "INSERT INTO status_jobs (job_id, submitted, owner, scheduled_time, total_images, submitted_at, priority,"
    " callback_url)"
    " SELECT j, true, o, t, n, a, p, c FROM unnest(%b::uuid[], %b::text[], %b::timestamptz[], %b::int[],"
    " %b::timestamptz[], %b::smallint[], %b::text[]) AS u(j, o, t, n, a, p, c)"
    " ON CONFLICT (job_id) DO UPDATE SET submitted = true, owner = EXCLUDED.owner, priority = EXCLUDED.priority,"
    " callback_url = EXCLUDED.callback_url,"
    # a submit re-published by an Idempotency-Key retry must not undo a reschedule
    " scheduled_time = CASE WHEN status_jobs.submitted THEN status_jobs.scheduled_time"
    " ELSE EXCLUDED.scheduled_time END, total_images = EXCLUDED.total_images,"
    " submitted_at = COALESCE(status_jobs.submitted_at, EXCLUDED.submitted_at)")
# New outcome rows only (a repeat conflicts and is skipped), then the job's counters move by
# exactly the rows inserted.
INSERT_OUTCOMES = (
    "WITH ins AS (INSERT INTO status_outcomes (task_id, job_id, visit_index, image_index, store_id,"
    " image_url, ok, width, height, perimeter, error)"
    " SELECT * FROM unnest(%b::text[], %b::uuid[], %b::int[], %b::int[], %b::text[], %b::text[],"
    " %b::boolean[], %b::int[], %b::int[], %b::int[], %b::text[])"
    " ON CONFLICT (task_id) DO NOTHING RETURNING job_id, ok)"
    " INSERT INTO status_jobs (job_id, succeeded, failed)"
    " SELECT job_id, count(*) FILTER (WHERE ok), count(*) FILTER (WHERE NOT ok) FROM ins GROUP BY job_id"
    " ON CONFLICT (job_id) DO UPDATE SET succeeded = status_jobs.succeeded + EXCLUDED.succeeded,"
    " failed = status_jobs.failed + EXCLUDED.failed")


def _outcome_row(e: ImageSucceeded | ImageFailed) -> tuple[Any, ...]:
    where = (e.task_id, e.job_id, e.visit_index, e.image_index, e.store_id, e.image_url)
    if isinstance(e, ImageSucceeded):
        return (*where, True, e.width, e.height, e.perimeter, None)
    return (*where, False, None, None, None, e.reason)


async def refresh_status(conn: AsyncConnection[Any], job_ids: set[Any]) -> int:
    """Recompute the status of `job_ids` from their counters (rows locked in a fixed order, so a
    second status instance folding the same jobs waits instead of writing a stale status).

    A job that has just become final and has a callback_url gets its webhook delivery here, in
    the same transaction as the status: the fold is the only writer of final statuses, so the
    delivery is created exactly once (a replay finds it there) and is never missed or lost.
    Returns how many were created. A withdrawn job (answered 503, hidden) gets none."""
    if not job_ids:
        return 0
    rows = await (await conn.execute(
        "SELECT job_id, total_images, released, cancelled, succeeded, failed, status, withdrawn, callback_url"
        " FROM status_jobs WHERE job_id = ANY(%b::uuid[]) ORDER BY job_id FOR UPDATE", (list(job_ids),))).fetchall()
    updates, webhooks = [], []
    for job_id, total, released, cancelled, succeeded, failed, current, withdrawn, callback_url in rows:
        status = derive_status(total=total, released=released, cancelled=cancelled,
                               succeeded=succeeded, failed=failed, withdrawn=withdrawn)
        if status != current:
            updates.append((job_id, status))
            if status in FINAL_STATUSES and callback_url is not None and not withdrawn:
                webhooks.append((job_id, webhook_id_for(job_id), callback_url))
    if updates:
        await conn.execute(
            # clock_timestamp(), not now() (the transaction's start): a large fold takes a while,
            # and the status is visible from its commit, a moment after this statement
            "UPDATE status_jobs AS s SET status = u.status, updated_at = clock_timestamp(),"
            # when it became final: what retention counts from (shared/retention.py)
            " final_at = CASE WHEN u.status = ANY(%s::text[]) THEN COALESCE(s.final_at, clock_timestamp()) END"
            " FROM unnest(%b::uuid[], %b::text[]) AS u(job_id, status) WHERE s.job_id = u.job_id",
            (list(FINAL_STATUSES), *columns(updates)))
    if webhooks:
        await conn.execute(
            "INSERT INTO webhook_deliveries (job_id, webhook_id, url, next_attempt_at, created_at)"
            " SELECT j, w, u, clock_timestamp(), clock_timestamp()"
            " FROM unnest(%b::uuid[], %b::text[], %b::text[]) AS x(j, w, u)"
            " ON CONFLICT (job_id) DO NOTHING", columns(webhooks))
    return len(webhooks)


async def store_offsets(conn: AsyncConnection[Any], offsets: list[tuple[str, int, int]]) -> None:
    await conn.execute(
        "INSERT INTO consumer_offsets (consumer, topic, partition, next_offset)"
        " SELECT %s, t, p, o FROM unnest(%b::text[], %b::int[], %b::bigint[]) AS u(t, p, o)"
        " ON CONFLICT (consumer, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset",
        (CONSUMER, *columns(offsets)))


async def stored_offsets(conn: AsyncConnection[Any]) -> dict[tuple[str, int], int]:
    rows = await (await conn.execute(
        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = %s", (CONSUMER,))).fetchall()
    return {(t, p): o for t, p, o in rows}


async def load_job(conn: AsyncConnection[Any], job_id: UUID) -> JobRow | None:
    row = await (await conn.execute(
        f"SELECT {JOB_COLUMNS} FROM status_jobs WHERE job_id = %s AND submitted AND NOT withdrawn",
        (job_id,))).fetchone()
    return JobRow(*row) if row else None


async def load_jobs(conn: AsyncConnection[Any], job_ids: list[UUID]) -> list[tuple[JobRow, list[Any] | None]]:
    """Many jobs in one query, each with its per-store failures when failed: the first failed
    image of each store as (store_id, visit_index, image_index, error) rows (what
    `domain.first_error_per_store` orders); jobs not in the view are absent."""
    rows = await (await conn.execute(
        f"SELECT {JOB_COLUMNS}, CASE WHEN j.status = 'failed' THEN (SELECT json_agg(json_build_array("
        " f.store_id, f.visit_index, f.image_index, f.error)) FROM (SELECT DISTINCT ON (store_id)"
        " store_id, visit_index, image_index, error FROM status_outcomes o WHERE o.job_id = j.job_id AND NOT o.ok"
        " ORDER BY store_id, visit_index, image_index) AS f) END"
        " FROM status_jobs AS j WHERE job_id = ANY(%b::uuid[]) AND submitted AND NOT withdrawn", (job_ids,))).fetchall()
    return [(JobRow(*row[:9]), row[9]) for row in rows]


async def folded_offsets(conn: AsyncConnection[Any], partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """How far the fold has read each partition (absent: nothing yet)."""
    stored = await stored_offsets(conn)
    return {tp: stored.get(tp, 0) for tp in partitions}


async def list_jobs(conn: AsyncConnection[Any], owners: list[str], keys_on: bool, status: str | None,
                    limit: int, after: tuple[datetime, UUID] | None) -> list[tuple[JobRow, datetime]]:
    """Jobs newest first (by submission, then id), after the keyset `after`; when keys are on,
    only those recorded under one of `owners` (the caller's tenant and its legacy key hashes)."""
    rows = await (await conn.execute(
        "SELECT job_id, status, scheduled_time, total_images, succeeded, failed, owner, priority, dispatched,"
        " submitted_at"
        " FROM status_jobs WHERE submitted AND submitted_at IS NOT NULL AND NOT withdrawn"
        " AND (NOT %(keys_on)s OR owner = ANY(%(owners)s::text[]))"
        " AND (%(status)s::text IS NULL OR status = %(status)s)"
        " AND (%(at)s::timestamptz IS NULL OR (submitted_at, job_id) < (%(at)s, %(id)s::uuid))"
        " ORDER BY submitted_at DESC, job_id DESC LIMIT %(limit)s",
        {"keys_on": keys_on, "owners": owners, "status": status, "limit": limit,
         "at": after[0] if after else None, "id": after[1] if after else None})).fetchall()
    return [(JobRow(*row[:9]), row[9]) for row in rows]


async def results_page(conn: AsyncConnection[Any], job_id: UUID, limit: int, offset: int) -> list[dict[str, Any]]:
    rows = await (await conn.execute(
        "SELECT task_id, store_id, image_url, ok, width, height, perimeter, error"
        " FROM status_outcomes WHERE job_id = %s ORDER BY visit_index, image_index"
        " LIMIT %s OFFSET %s", (job_id, limit, offset))).fetchall()
    return [{"task_id": t, "store_id": s, "image_url": u, "status": "succeeded" if ok else "failed",
             "width": w, "height": h, "perimeter": p, "error": e} for t, s, u, ok, w, h, p, e in rows]


async def decisions(conn: AsyncConnection[Any], command_ids: list[UUID]) -> dict[UUID, tuple[bool, str]]:
    """command_id -> (accepted, state) of those commands whose decision has been folded."""
    rows = await (await conn.execute(
        "SELECT command_id, accepted, state FROM status_commands WHERE command_id = ANY(%s)",
        (command_ids,))).fetchall()
    return {c: (accepted, state) for c, accepted, state in rows}


UNEMITTED = ("SELECT job_id, status, total_images, succeeded, failed FROM status_jobs"
             " WHERE emitted_status IS DISTINCT FROM status AND submitted"
             " ORDER BY job_id LIMIT %s FOR UPDATE SKIP LOCKED")


async def unemitted(conn: AsyncConnection[Any], limit: int = 1000) -> list[tuple[UUID, str, int, int, int]]:
    """(job_id, status, total, succeeded, failed) of rows whose status change was not published,
    locked (SKIP LOCKED: another status instance takes others) until the transaction ends.

    Ordered by job id so the plan walks the partial index `status_jobs_unemitted`: PostgreSQL
    cannot estimate how few rows `IS DISTINCT FROM` between two columns leaves, and with a bare
    LIMIT it chose a sequential scan of the whole view on every round (in the soak 3.5 ms a
    round, a tenth of a core, growing with the table; the index walk reads only what is due)."""
    return await (await conn.execute(UNEMITTED, (limit,))).fetchall()


async def mark_emitted(conn: AsyncConnection[Any], rows: list[tuple[UUID, str]]) -> None:
    await conn.execute(
        "UPDATE status_jobs AS s SET emitted_status = u.status"
        " FROM unnest(%b::uuid[], %b::text[]) AS u(job_id, status) WHERE s.job_id = u.job_id", columns(rows))


class ViewReader:
    """The reads the API makes, each on a pooled connection (the handlers' `ViewReads`)."""

    def __init__(self, runtime: Any) -> None:
        self._runtime = runtime  # its pool exists once the app has started

    async def _on_connection(self, query: Callable[..., Awaitable[T]], *args: Any) -> T:
        async with self._runtime.pool.connection() as conn:
            return await query(conn, *args)

    async def load_job(self, job_id: UUID) -> JobRow | None:
        return await self._on_connection(load_job, job_id)

    async def list_jobs(self, owners: list[str], keys_on: bool, status: str | None, limit: int,
                        after: tuple[datetime, UUID] | None) -> list[tuple[JobRow, datetime]]:
        return await self._on_connection(list_jobs, owners, keys_on, status, limit, after)

    async def results_page(self, job_id: UUID, limit: int, offset: int) -> list[dict[str, Any]]:
        return await self._on_connection(results_page, job_id, limit, offset)

    async def load_jobs(self, job_ids: list[UUID]) -> list[tuple[JobRow, list[Any] | None]]:
        return await self._on_connection(load_jobs, job_ids)

    async def folded_offsets(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return await self._on_connection(folded_offsets, partitions)

    async def decisions(self, command_ids: list[UUID]) -> dict[UUID, tuple[bool, str]]:
        return await self._on_connection(decisions, command_ids)
