"""PostgreSQL helpers: the connection pool and the migration runner.

Migrations are the plain SQL files in `shared/migrations`, applied in name order at
service start-up under an advisory lock, each once (recorded in `schema_migrations`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")
_LOCK_ID = 771_020_411  # any fixed number, the same in every service
CUSTOM_PLANS = "-c plan_cache_mode=force_custom_plan"  # see make_pool


def make_pool(url: str, max_size: int = 10) -> AsyncConnectionPool:
    """A pool that reconnects by itself; opened without waiting so start-up never blocks.

    Connections are in autocommit mode: a single statement is one round trip (no BEGIN and
    COMMIT around it); statements that must commit together use `transaction(pool)`.

    Every statement is planned for its parameters at each call (`plan_cache_mode =
    force_custom_plan`; psycopg still prepares it, so it is parsed once). The services look many
    keys up at once (`= ANY(%s)`, `unnest(%s)`: a batch's task or job ids) in tables that grow
    from empty, and a prepared statement's generic plan, made while a table was small, stays:
    on the `make run` stack it scanned processor_results whole for every batch of tasks (12-29
    ms a call a few bursts in, 1.1 ms planned afresh), and joined the store statistics' tables
    whole (70-170 ms a call, 2-4 ms afresh): most of PostgreSQL's CPU in a burst. Planning
    afresh costs some tens of microseconds a statement."""
    return AsyncConnectionPool(
        url, min_size=1, max_size=max_size, open=False, timeout=5.0,
        kwargs={"autocommit": True, "connect_timeout": 3, "options": with_custom_plans(url)},
        reconnect_timeout=0,  # keep trying for ever: the database may be restarting
    )


def with_custom_plans(url: str) -> str:
    """The connection's `options`: those of DATABASE_URL (or else of PGOPTIONS, as libpq would
    take them), then plan_cache_mode: an operator's statement_timeout or search_path is kept."""
    given = psycopg.conninfo.conninfo_to_dict(url).get("options") or os.environ.get("PGOPTIONS", "")
    return f"{given} {CUSTOM_PLANS}".strip()


def columns(rows: Iterable[Sequence[Any]]) -> list[list[Any]]:
    """Rows as one list per column: the parameters of an `INSERT ... SELECT FROM unnest(...)`,
    which writes a whole batch in one statement."""
    return [list(column) for column in zip(*rows, strict=True)]


@asynccontextmanager
async def transaction(pool: AsyncConnectionPool) -> AsyncIterator[AsyncConnection[Any]]:
    """A pooled connection inside one transaction: committed on exit, rolled back on error."""
    async with pool.connection() as conn, conn.transaction():
        yield conn


async def apply_migrations(url: str) -> list[str]:
    """Apply pending migrations; returns the names applied now (idempotent)."""
    applied: list[str] = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=3) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in await (await conn.execute("SELECT version FROM schema_migrations")).fetchall()}
            for path in sorted(MIGRATIONS.glob("*.sql")):
                if path.stem in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (path.stem,))
                applied.append(path.stem)
                log.info("applied migration %s", path.stem)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied
