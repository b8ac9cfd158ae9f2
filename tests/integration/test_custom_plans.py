"""Every statement a service runs is planned for its parameters at each call (shared/db.py::
make_pool): a batch lookup prepared while its table was empty must not keep that table's plan
once the table holds a few bursts' rows (on the `make run` stack such plans scanned
processor_results whole for every batch of tasks, 12-29 ms a call instead of about 1 ms)."""

from __future__ import annotations

import asyncio

from services.processor.adapters.results import STORED
from shared.db import make_pool
from tests.support.stack import Infra, Stack


def test_a_prepared_batch_lookup_is_planned_afresh_as_its_table_grows(infra: Infra) -> None:
    stack = Stack(infra)  # a database of its own, migrated

    async def scenario() -> tuple[str, int, int]:
        pool = make_pool(stack.database_url, max_size=1)
        await pool.open(wait=True)
        try:
            async with pool.connection() as conn:
                for round_ in range(12):  # psycopg prepares a statement on its sixth call
                    if round_ == 6:  # the table grows after the statement was prepared
                        await conn.execute(
                            "INSERT INTO processor_results (task_id, job_id, visit_index, image_index, store_id,"
                            " image_url, width, height, perimeter) SELECT 't' || n, gen_random_uuid(), 0, 0, 'S',"
                            " 'http://x', 1, 1, 4 FROM generate_series(1, 20000) AS n")
                    keys = [f"t{n}" for n in range(round_ * 100, round_ * 100 + 500)]
                    await (await conn.execute(STORED, (keys,))).fetchall()
                mode = (await (await conn.execute("SHOW plan_cache_mode")).fetchone() or [""])[0]
                generic, custom = await (await conn.execute(
                    "SELECT coalesce(sum(generic_plans), 0), coalesce(sum(custom_plans), 0)"
                    " FROM pg_prepared_statements WHERE statement LIKE '%%processor_results%%'")).fetchone() or (0, 0)
            return mode, int(generic), int(custom)
        finally:
            await pool.close()

    mode, generic, custom = asyncio.run(scenario())
    assert mode == "force_custom_plan"
    assert custom >= 6 and generic == 0, (generic, custom)  # prepared, yet planned at every call
