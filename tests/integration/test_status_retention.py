"""The status service's expiry (services/status/adapters/retention.py) on a scratch view: which
jobs it forgets (final long enough, published, no webhook still being retried) and which it
keeps, that it deletes every row of a job and a tombstone is sent for each, and that a large
job goes in a batch of its own. The fold sets `final_at` when a status becomes final."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import psycopg
from psycopg_pool import AsyncConnectionPool

from services.status.adapters.retention import expire_jobs
from shared.events import JobWithdrawn
from shared.retention import Deleted
from tests.support.fold import ScratchView
from tests.support.jobs import JobEvents

JOB_TABLES = ("status_jobs", "status_outcomes", "webhook_deliveries", "webhook_attempts", "status_commands")


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    async def send(self, topic: str, value: bytes | None, key: bytes) -> asyncio.Future[None]:
        self.sent.append((topic, value, key))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class FakeRuntime:
    def __init__(self, pool: AsyncConnectionPool, producer: FakeProducer) -> None:
        self.pool, self.producer = pool, producer


def expire(scratch: ScratchView, batch: int = 500) -> tuple[Deleted, list[UUID]]:
    """One batch expired with a retention of 60 s; the jobs tombstoned."""
    async def run() -> tuple[Deleted, list[UUID]]:
        producer = FakeProducer()
        async with AsyncConnectionPool(scratch.url, min_size=1, max_size=1, kwargs={"autocommit": True}) as pool:
            deleted = await expire_jobs(FakeRuntime(pool, producer), "p.status", 60, batch)
        assert all(topic == "p.status" and value is None for topic, value, _ in producer.sent)
        return deleted, [UUID(key.decode()) for _, _, key in producer.sent]
    return asyncio.run(run())


def sql(scratch: ScratchView, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(scratch.url, autocommit=True) as conn:
        cur = conn.execute(statement, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def age(scratch: ScratchView, *jobs: JobEvents, emitted: bool = True) -> None:
    """The jobs became final an hour ago (and, by default, the relay published it)."""
    sql(scratch, "UPDATE status_jobs SET final_at = final_at - interval '1 hour',"
        " emitted_status = CASE WHEN %s THEN status ELSE emitted_status END WHERE job_id = ANY(%s)",
        emitted, [j.job_id for j in jobs])


def rows_of(scratch: ScratchView, job: JobEvents) -> dict[str, int]:
    return {t: sql(scratch, f"SELECT count(*) FROM {t} WHERE job_id = %s", job.job_id)[0][0]  # noqa: S608
            for t in JOB_TABLES}


def finished(scratch: ScratchView, images: int = 1) -> JobEvents:
    job = JobEvents.new(("S1", images))
    scratch.fold([job.submitted(), job.released(), *(job.ok("S1", 0, i) for i in range(images))])
    return job


def test_the_fold_stamps_the_final_time_and_only_on_final_statuses(scratch: ScratchView) -> None:
    done, ongoing, withdrawn = finished(scratch), JobEvents.new(("S1", 2)), JobEvents.new(("S1", 1))
    scratch.fold([ongoing.submitted(), ongoing.released(), ongoing.ok("S1", 0, 0),
                  withdrawn.submitted(), JobWithdrawn(job_id=withdrawn.job_id)])
    final_at = dict(sql(scratch, "SELECT job_id, final_at IS NOT NULL FROM status_jobs WHERE job_id = ANY(%s)",
                        [done.job_id, ongoing.job_id, withdrawn.job_id]))
    assert final_at == {done.job_id: True, ongoing.job_id: False, withdrawn.job_id: True}


def test_a_job_final_long_enough_is_forgotten_with_every_row_and_tombstoned(scratch: ScratchView) -> None:
    old, recent, unpublished = finished(scratch, 2), finished(scratch), finished(scratch)
    ongoing = JobEvents.new(("S1", 2))
    scratch.fold([ongoing.submitted(), ongoing.released(), ongoing.ok("S1", 0, 0)])
    age(scratch, old)
    age(scratch, unpublished, emitted=False)
    sql(scratch, "INSERT INTO status_commands (command_id, job_id, accepted, state)"
        " VALUES (gen_random_uuid(), %s, false, 'ongoing')", old.job_id)
    sql(scratch, "UPDATE status_jobs SET emitted_status = status WHERE job_id = %s", recent.job_id)
    deleted, tombstoned = expire(scratch)
    assert tombstoned == [old.job_id]
    assert deleted["status_jobs"] == 1 and deleted["status_outcomes"] == 2 and deleted["status_commands"] == 1
    assert not any(rows_of(scratch, old).values())
    for kept in (recent, unpublished, ongoing):
        assert rows_of(scratch, kept)["status_jobs"] == 1


def test_a_job_whose_webhook_is_still_retried_is_kept_until_it_is_not(scratch: ScratchView) -> None:
    job = finished(scratch)
    sql(scratch, "INSERT INTO webhook_deliveries (job_id, webhook_id, url, state) VALUES (%s, 'w', 'u', 'pending')",
        job.job_id)
    sql(scratch, "INSERT INTO webhook_attempts (job_id, attempt, at, duration_ms) VALUES (%s, 1, now(), 5)",
        job.job_id)
    age(scratch, job)
    assert job.job_id not in expire(scratch)[1]
    sql(scratch, "UPDATE webhook_deliveries SET state = 'failed' WHERE job_id = %s", job.job_id)
    assert job.job_id in expire(scratch)[1]
    assert not any(rows_of(scratch, job).values())


def test_a_large_job_goes_in_a_batch_of_its_own(scratch: ScratchView) -> None:
    large, small = finished(scratch, 5), finished(scratch, 1)
    age(scratch, large)
    age(scratch, small)
    sql(scratch, "UPDATE status_jobs SET final_at = final_at - interval '1 minute' WHERE job_id = %s", large.job_id)
    first, tombstoned = expire(scratch, batch=3)  # the oldest first: the large one, alone
    assert tombstoned == [large.job_id] and first["status_outcomes"] == 5
    assert first.more_waiting  # the small one is due too: the round goes on
    second, tombstoned = expire(scratch, batch=3)
    assert tombstoned == [small.job_id] and not second.more_waiting


def test_a_batch_cut_below_its_size_says_more_are_waiting(scratch: ScratchView) -> None:
    jobs = [finished(scratch, 2) for _ in range(3)]
    age(scratch, *jobs)
    first, tombstoned = expire(scratch, batch=5)  # 2 + 2 rows; a third job would make 6
    assert (len(tombstoned), first["status_outcomes"], first.more_waiting) == (2, 4, True)
    last, tombstoned = expire(scratch, batch=5)
    assert (len(tombstoned), last.more_waiting) == (1, False)
