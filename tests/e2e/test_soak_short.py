"""The soak's short version for CI (issue 22; `make soak-load` runs the 30-minute one): the same
code (tests/bench/soak.py: open-loop submits of 1-10 visits, one new image each, due 5 s later;
a row of figures every 30 s; every job followed until final; errors counted the same way) for
150 s at 20 submits/s, the replaced system's own rate, with the simulated GPU on and a 60 s
retention swept every 10 s.

It runs on a tests/support Stack (ingest, scheduler, status, two processors, store statistics)
against the session's Kafka and PostgreSQL, not on `python -m deploy.devstack run`: that stack
brings its own broker and database, a second pair beside the session's on a 2-core machine,
and some 20 s more of start-up. Asserted: correctness only (every job final, 0 errors, and
retention keeping the tables bounded: the first jobs' rows gone, the view holding about a
retention's worth). The timing criteria are the benchmark's (docs/benchmarks.md)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from tests.bench.soak import run
from tests.bench.soak_stack import stack_target
from tests.support.stack import Infra, Stack
from tests.support.waiting import wait_for

SECONDS, RATE, RETENTION_S, EVERY_S = 150, 20, 60, 10
SETTINGS = {"JOB_RETENTION_S": str(RETENTION_S), "RETENTION_EVERY_S": str(EVERY_S), "RETENTION_SLACK_S": "0",
            "KAFKA_TOPIC_RETENTION_S": "120", "PROCESSOR_GPU_DELAY_MS": "100-400"}
# table -> the column naming the job
TABLES = {"status_jobs": "job_id", "status_outcomes": "job_id", "processor_results": "job_id",
          "scheduler_jobs": "job_id", "ingest_idempotency_keys": "job_id"}


def rows_of(database_url: str, job_ids: list[str]) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        return {table: conn.execute(f"SELECT count(*) FROM {table} WHERE {column}::text = ANY(%s)",  # noqa: S608
                                    (job_ids,)).fetchone()[0]  # type: ignore[index]
                for table, column in TABLES.items()}


def overdue(database_url: str, older_than_s: float = RETENTION_S + EVERY_S + 60) -> int:
    """Jobs the view still holds that became final more than `older_than_s` ago."""
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM status_jobs WHERE final_at < now() - make_interval(secs => %s)",
                            (older_than_s,)).fetchone()[0]  # type: ignore[index]


@pytest.mark.timeout(330)
def test_a_short_soak_ends_with_every_job_final_no_errors_and_bounded_tables(infra: Infra) -> None:
    stack = Stack(infra, env=SETTINGS)
    try:
        services = stack.start_all(processors=2)
        stack.wait_ready(stack.start_service("storestats"))
        stack.wait_partitions_shared()
        result = asyncio.run(run(stack_target(stack, services, SETTINGS), SECONDS, RATE, tick_s=30, drain_s=60))
        soak = result.soak
        assert len(soak.accepted) == SECONDS * RATE, dict(soak.codes)
        assert (result.not_final, soak.lost) == (0, 0), "every job final"
        assert result.errors == 0, (f"submit answers {dict(soak.codes)}, outcomes {dict(soak.outcomes)}, "
                                    f"log errors {result.log_errors}")
        first = [j for j, at in soak.accepted.items() if at - min(soak.accepted.values()) < 30]
        wait_for(lambda: not any(rows_of(stack.database_url, first).values()), 30,
                 "the first 30 s of jobs forgotten by every table")
        # the view holds only jobs final within the retention, a sweep and a margin for the sweep's
        # own pace (the first run kept 2,257 of 3,000 jobs, the oldest final ~110 s before)
        wait_for(lambda: overdue(stack.database_url) == 0, 30, "no job kept past its retention")
        kept = overdue(stack.database_url, older_than_s=0)  # every job the view holds is final
        assert kept < len(soak.accepted), kept
    finally:
        stack.stop()
