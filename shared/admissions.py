"""Whether a record that was published without an acknowledgement in time is admitted or
withdrawn: one row per record id in `admissions`, written once by whoever comes first.

A publisher that gives up waiting for Kafka's acknowledgement cannot take the record back
from its producer (an idempotent producer retries it until it is written, and a broker that
was paused writes what sat in its socket buffer). So before answering "not accepted" (503) it
*withdraws* the record's id here; the consumer that acts on the record (the scheduler) *admits*
each id here in the same transaction as its effect. The primary key makes the two mutually
exclusive: a withdrawal that loses learns the record was admitted (and answers 200 after all);
a record that arrives after its withdrawal is ignored. Records acknowledged in time never
touch this table on the publishing side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool


async def withdraw(pool: AsyncConnectionPool, record_id: UUID) -> bool:
    """Withdraw the record unless it was admitted: True if it is now withdrawn (never acted
    on), False if its consumer admitted it first."""
    async with pool.connection() as conn:
        return await withdraw_on(conn, record_id)


async def withdraw_on(conn: AsyncConnection[Any], record_id: UUID) -> bool:
    await conn.execute("INSERT INTO admissions (id, admitted) VALUES (%s, false) ON CONFLICT (id) DO NOTHING",
                       (record_id,))
    row = await (await conn.execute("SELECT admitted FROM admissions WHERE id = %s", (record_id,))).fetchone()
    return row is not None and not row[0]


async def admit(conn: AsyncConnection[Any], record_ids: Sequence[UUID]) -> set[UUID]:
    """Admit the records (inside the consumer's transaction); returns those already withdrawn,
    which must not be acted on."""
    if not record_ids:
        return set()
    ids = list(record_ids)
    cur = await conn.execute(
        "INSERT INTO admissions (id, admitted) SELECT unnest(%s::uuid[]), true"
        " ON CONFLICT (id) DO NOTHING RETURNING id", (ids,))
    new = {row[0] for row in await cur.fetchall()}
    seen = [i for i in ids if i not in new]  # admitted before (a redelivery) or withdrawn
    if not seen:
        return set()
    rows = await (await conn.execute("SELECT id FROM admissions WHERE id = ANY(%s) AND NOT admitted",
                                     (seen,))).fetchall()
    return {row[0] for row in rows}
