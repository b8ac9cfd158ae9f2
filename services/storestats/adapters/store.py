"""The service's own tables in PostgreSQL: what makes its counts exact.

Every counted image is a row keyed by `task_id` (`INSERT ... ON CONFLICT DO NOTHING`), so an
outcome delivered twice (a restart re-reading past the last committed offset, or a processor
re-emitting it) is counted once, in the window of its first outcome. The per-store counters
for Prometheus, and each window's sums (`storestats_windows`), grow by the rows actually
inserted, in the same transaction. A window's statistics are then read back from its sums:
absolute values, so publishing one twice is harmless. The tables are the service's alone
(created here, not by the core's migrations); rows and sums of windows older than
STORESTATS_KEEP_S are pruned, the counters stay."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from psycopg_pool import AsyncConnectionPool

from services.storestats.domain import (
    CountedImage,
    StoreTotals,
    WindowStats,
    totals_from_rows,
    window_from_rows,
    window_start,
)
from shared.db import columns, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS storestats_outcomes (
    task_id TEXT PRIMARY KEY,
    store_id TEXT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    reason TEXT,             -- NULL: succeeded
    perimeter BIGINT
);
CREATE INDEX IF NOT EXISTS storestats_outcomes_window ON storestats_outcomes (store_id, window_start);
CREATE TABLE IF NOT EXISTS storestats_totals (
    store_id TEXT NOT NULL,
    reason TEXT NOT NULL,    -- '': succeeded
    images BIGINT NOT NULL,
    PRIMARY KEY (store_id, reason)
);
"""

# Each window's sums, kept as its rows are counted: reading a window (or a store's latest mean)
# costs one row per reason, not a scan of every image the window holds. Grouping the image rows
# on every batch cost PostgreSQL 37% of a core in the soak, growing with the window and,
# for the latest mean, with everything kept (STORESTATS_KEEP_S: 7 days by default).
WINDOW_SUMS = """
CREATE TABLE storestats_windows (
    store_id TEXT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    reason TEXT NOT NULL,    -- '': succeeded
    images BIGINT NOT NULL,
    perimeter_sum BIGINT NOT NULL,
    PRIMARY KEY (store_id, window_start, reason)
);
INSERT INTO storestats_windows (store_id, window_start, reason, images, perimeter_sum)
SELECT store_id, window_start, coalesce(reason, ''), count(*), coalesce(sum(perimeter), 0)
FROM storestats_outcomes GROUP BY 1, 2, 3;
"""

# Rows are upserted in key order, so two instances counting the same stores lock them in the
# same order (no deadlock).
INSERT = """
WITH counted AS (
    INSERT INTO storestats_outcomes (task_id, store_id, window_start, reason, perimeter)
    SELECT * FROM unnest(%b::text[], %b::text[], %b::timestamptz[], %b::text[], %b::bigint[])
    ON CONFLICT (task_id) DO NOTHING
    RETURNING store_id, window_start, coalesce(reason, '') AS reason, perimeter),
windows AS (
    INSERT INTO storestats_windows (store_id, window_start, reason, images, perimeter_sum)
    SELECT store_id, window_start, reason, count(*), coalesce(sum(perimeter), 0)
    FROM counted GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (store_id, window_start, reason) DO UPDATE
    SET images = storestats_windows.images + excluded.images,
        perimeter_sum = storestats_windows.perimeter_sum + excluded.perimeter_sum)
INSERT INTO storestats_totals (store_id, reason, images)
SELECT store_id, reason, count(*) FROM counted GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (store_id, reason) DO UPDATE SET images = storestats_totals.images + excluded.images
"""

# the windows where the batch's tasks count (a repeat counts where its first outcome did)
WINDOWS = """
SELECT w.store_id, w.window_start, nullif(w.reason, ''), w.images, w.perimeter_sum
FROM storestats_windows w
JOIN (SELECT DISTINCT store_id, window_start FROM storestats_outcomes WHERE task_id = ANY(%s)) b
  USING (store_id, window_start)
"""

TOTALS = "SELECT store_id, reason, images FROM storestats_totals WHERE %s::text[] IS NULL OR store_id = ANY(%s)"

LATEST_MEANS = """
SELECT DISTINCT ON (store_id) store_id, perimeter_sum::float8 / images
FROM storestats_windows WHERE reason = '' AND (%s::text[] IS NULL OR store_id = ANY(%s))
ORDER BY store_id, window_start DESC
"""


async def create_tables(pool: AsyncConnectionPool) -> None:
    async with transaction(pool) as conn:
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('storestats_schema'))")
        missing = await (await conn.execute("SELECT to_regclass('storestats_windows') IS NULL")).fetchone()
        await conn.execute(SCHEMA)
        if missing and missing[0]:  # a fresh install, or one from before the sums: they start from the rows kept
            await conn.execute(WINDOW_SUMS)


async def count(pool: AsyncConnectionPool, outcomes: Sequence[CountedImage], window_s: int) -> list[WindowStats]:
    """Count `outcomes` (each task once, ever) and return the statistics of every window they
    count in, as they are after this batch."""
    rows = [(o.task_id, o.store_id, datetime.fromtimestamp(window_start(o.occurred_at, window_s), UTC),
             o.reason, o.perimeter) for o in outcomes]
    task_ids = [o.task_id for o in outcomes]
    async with transaction(pool) as conn:
        await conn.execute(INSERT, columns(rows))
        grouped = await (await conn.execute(WINDOWS, (task_ids,))).fetchall()
    by_window: dict[tuple[str, float], list[tuple[str | None, int, int]]] = {}
    for store_id, start, reason, images, perimeter_sum in grouped:
        by_window.setdefault((store_id, start.timestamp()), []).append((reason, images, int(perimeter_sum)))
    return [window_from_rows(store, start, counts) for (store, start), counts in by_window.items()]


async def totals(pool: AsyncConnectionPool, stores: Sequence[str] | None = None) -> dict[str, StoreTotals]:
    """Each store's counters and latest mean perimeter (all stores when `stores` is None)."""
    wanted = list(stores) if stores is not None else None
    async with pool.connection() as conn:
        counters = await (await conn.execute(TOTALS, (wanted, wanted))).fetchall()
        means = dict(await (await conn.execute(LATEST_MEANS, (wanted, wanted))).fetchall())
    by_store: dict[str, list[tuple[str, int]]] = {}
    for store_id, reason, images in counters:
        by_store.setdefault(store_id, []).append((reason, images))
    return {store: totals_from_rows(rows, means.get(store)) for store, rows in by_store.items()}


async def prune(pool: AsyncConnectionPool, keep_s: int) -> int:
    """Forget images of windows older than `keep_s` (a repeat of one after that counts again),
    and those windows' sums with them (one transaction: a window is kept or gone whole)."""
    async with transaction(pool) as conn:
        done = await conn.execute(
            "DELETE FROM storestats_outcomes WHERE window_start < now() - make_interval(secs => %s)", (keep_s,))
        await conn.execute(
            "DELETE FROM storestats_windows WHERE window_start < now() - make_interval(secs => %s)", (keep_s,))
        return done.rowcount


class PostgresStats:
    """StatsStore on the service's pool."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def count(self, images: Sequence[CountedImage], window_s: int) -> list[WindowStats]:
        return await count(self._pool, images, window_s)

    async def totals(self, stores: Sequence[str] | None = None) -> dict[str, StoreTotals]:
        return await totals(self._pool, stores)
