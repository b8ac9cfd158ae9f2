"""Retention: the maintenance loop every service runs over its own tables.

A service hands the loop its expiries, one per kind of row it forgets (each service's SQL stays
in its adapters). Every `RETENTION_EVERY_S` the loop runs each expiry in batches of at most
`RETENTION_BATCH` rows, each batch its own short transaction, and runs it again while a batch
came back full, yielding to the event loop in between: no lock is held for long and the
service's own work goes on between batches. An expiry that fails (the database down) is
logged and tried again on the next tick; the loop itself never ends the service.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool

from shared.runtime import Runtime, exit_if_it_dies

log = logging.getLogger(__name__)
DELETED = Counter("imagejobs_retention_deleted_total", "Rows deleted by retention", ["table"])

T = TypeVar("T")
# Deletes one batch, at most about `batch` rows of any one table (the rows that expire and what
# hangs on them, in one transaction); returns the rows deleted per table.
ExpireBatch = Callable[[int], Awaitable[Mapping[str, int]]]


@dataclass(frozen=True)
class Expiry:
    table: str  # what it expires (named in the log when it fails)
    expire: ExpireBatch


class Deleted(dict[str, int]):
    """Rows one batch deleted, per table, from an expiry that knows whether more rows are due
    although no table's count reached the batch size: a batch cut by `within_batch` because the
    next job would not fit deletes fewer rows than the batch, yet more are waiting."""

    def __init__(self, counts: Mapping[str, int] | None = None, *, more_waiting: bool = False) -> None:
        super().__init__(counts or {})
        self.more_waiting = more_waiting


def batch_was_full(deleted: Mapping[str, int], batch: int) -> bool:
    """A full batch means more may be waiting: run another at once rather than on the next tick."""
    return (isinstance(deleted, Deleted) and deleted.more_waiting) or max(deleted.values(), default=0) >= batch


def within_batch(candidates: Sequence[tuple[T, int]], batch: int) -> list[T]:
    """The first candidates whose rows (each candidate's count: a job's images, say) add up to at
    most `batch`, and at least the first one: a batch of many small jobs, or one large job alone."""
    chosen: list[T] = []
    rows = 0
    for candidate, size in candidates:
        if chosen and rows + size > batch:
            break
        chosen.append(candidate)
        rows += size
    return chosen


async def sweep(expiries: Sequence[Expiry], batch: int) -> dict[str, int]:
    """One tick: every expiry until a batch comes back short; rows deleted per table. An
    expiry that fails is logged and left for the next tick; the others still run."""
    total: dict[str, int] = {}
    for expiry in expiries:
        try:
            while True:
                deleted = await expiry.expire(batch)
                for table, rows in deleted.items():
                    if rows:
                        DELETED.labels(table).inc(rows)
                        total[table] = total.get(table, 0) + rows
                if not batch_was_full(deleted, batch):
                    break
                await asyncio.sleep(0)  # between batches the service's own work goes first
        except Exception as exc:  # noqa: BLE001 - the next tick tries again
            log.warning("expiring %s failed (%s: %s); trying again in the next round",
                        expiry.table, type(exc).__name__, exc)
    return total


async def run_retention(connected: asyncio.Event, expiries: Sequence[Expiry], every_s: float, batch: int) -> None:
    """Sweep every `every_s` for as long as the service runs (started once it is connected)."""
    await connected.wait()
    while True:
        deleted = await sweep(expiries, batch)
        if deleted:
            log.info("retention deleted %s", ", ".join(f"{rows} {table}" for table, rows in sorted(deleted.items())))
        await asyncio.sleep(every_s)


def start_retention(runtime: Runtime, expiries: Sequence[Expiry]) -> asyncio.Task[None]:
    """The service's maintenance loop as a task (cancel it at shutdown)."""
    settings = runtime.settings
    task = asyncio.create_task(run_retention(runtime.connected, expiries, settings.retention_every_s,
                                             settings.retention_batch))
    exit_if_it_dies(task, "the retention loop")
    return task


async def delete_batch(pool: AsyncConnectionPool, table: str, sql: str, older_than_s: float,
                       batch: int) -> dict[str, int]:
    """Run one expiry statement (parameters `older_than_s` and `batch`) in its own transaction
    (the pool's connections are autocommit); `table` is what its rowcount counts."""
    async with pool.connection() as conn:
        cur = await conn.execute(sql, {"older_than_s": older_than_s, "batch": batch})
        return {table: cur.rowcount}


def statement_expiry(runtime: Runtime, table: str, sql: str, older_than_s: float) -> Expiry:
    """An expiry that is one DELETE statement on `runtime`'s pool."""
    return Expiry(table, lambda batch: delete_batch(runtime.pool, table, sql, older_than_s, batch))
