"""The status outbox relay's query (services/status/adapters/view.py::UNEMITTED) finds the few
rows whose status change is not yet published without reading the whole view: on a view of
20,000 published jobs its plan walks the partial index, never a sequential scan. (With a bare
LIMIT, PostgreSQL, unable to estimate the two-column `IS DISTINCT FROM`, scanned every row on
every round: a tenth of a core in the soak, growing with the table.)"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg

from services.status.adapters import view
from tests.support.stack import Infra, Stack


def _plan_nodes(plan: dict[str, Any]) -> list[str]:
    return [plan["Node Type"], *(n for child in plan.get("Plans", []) for n in _plan_nodes(child))]


def test_the_relay_reads_only_the_unpublished_rows_of_a_large_view(infra: Infra) -> None:
    stack = Stack(infra)  # a database of its own, migrated
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO status_jobs (job_id, submitted, status, emitted_status)"
                     " SELECT gen_random_uuid(), true, 'completed', 'completed' FROM generate_series(1, 20000)")
        due = [r[0] for r in conn.execute(
            "INSERT INTO status_jobs (job_id, submitted, status) SELECT gen_random_uuid(), true, 'ongoing'"
            " FROM generate_series(1, 3) RETURNING job_id").fetchall()]
        conn.execute("INSERT INTO status_jobs (job_id, submitted, status) VALUES (gen_random_uuid(), false, 'ongoing')")
        conn.execute("ANALYZE status_jobs")
        [(plan,)] = conn.execute("EXPLAIN (FORMAT JSON) " + view.UNEMITTED, (1000,)).fetchall()
    nodes = _plan_nodes((plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"])
    assert "Seq Scan" not in nodes, nodes
    assert "Index Scan" in nodes, nodes

    async def relay_round() -> list[Any]:
        async with await psycopg.AsyncConnection.connect(stack.database_url) as conn, conn.transaction():
            return [row[0] for row in await view.unemitted(conn)]
    assert sorted(asyncio.run(relay_round())) == sorted(due)  # not the unsubmitted one either
