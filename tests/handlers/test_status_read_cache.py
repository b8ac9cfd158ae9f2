"""Status reads from memory (services/status/handlers/read_cache.py) in-process: the fake view
(tests/handlers/fakes_status.py) whose rows the test moves, and the fold's announcements made by
hand. What a client sees: the same answer as the view's, never an older one than the view had
committed before the read began, and no query for a read whose answer cannot have changed."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest

from services.status.domain import Caller, FoldCoverage, JobNotFound, JobRow
from services.status.handlers.jobs import JobReader
from services.status.handlers.read_cache import ReadCache
from tests.handlers.fakes_status import FakeEnds, FakeView

ANYONE = Caller(None, keys_on=False)
TEAM_A = Caller("team-a", keys_on=True)


def cached(view: FakeView, complete: bool = True, max_jobs: int = 100, max_age_s: float = 5.0,
           clock: list[float] | None = None) -> tuple[ReadCache, FoldCoverage]:
    coverage = FoldCoverage(complete)
    now = clock if clock is not None else [0.0]
    return ReadCache(view, coverage, max_jobs, max_age_s, clock=lambda: now[0]), coverage


async def status_of(cache: ReadCache, job_id: UUID) -> str:
    found = await cache.find(job_id)
    assert found is not None
    return found[0].status


async def refreshed(cache: ReadCache, view: FakeView, queries_before: int) -> None:
    """Wait until the cache's refresh loop has made its query."""
    async with asyncio.timeout(5):
        while view.queries == queries_before:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0)  # the loop stores what it read before its next await


def test_a_job_read_again_is_answered_from_memory_with_the_same_answer() -> None:
    async def run() -> None:
        view = FakeView()
        job = view.add()
        cache, _ = cached(view)
        first = await cache.find(job)
        assert view.queries == 1
        assert await cache.find(job) == first and await cache.find(job) == first
        assert view.queries == 1
    asyncio.run(run())


def test_a_folded_change_is_read_from_the_view_until_the_cache_has_read_it_again() -> None:
    async def run() -> None:
        view = FakeView()
        jobs = [view.add() for _ in range(3)]
        cache, _ = cached(view)
        for job in jobs:
            await cache.find(job)
        for job in jobs:
            view.move(job, "ongoing", 1)
        before = view.queries
        cache.folded(set(jobs))
        # committed before this read began: the read must not answer the old status
        assert await status_of(cache, jobs[0]) == "ongoing" and view.queries == before + 1
        refresher = asyncio.create_task(cache.run())
        try:
            await refreshed(cache, view, before + 1)
            assert view.queries == before + 2  # the three touched jobs in one query
            assert [await status_of(cache, job) for job in jobs] == ["ongoing"] * 3
            assert view.queries == before + 2  # then from memory again
        finally:
            refresher.cancel()
    asyncio.run(run())


class GatedView(FakeView):
    """A view whose reads wait for `gate`: a fold can commit while a read is under way."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()

    async def load_jobs(self, job_ids: list[UUID]) -> list[tuple[JobRow, list[Any] | None]]:
        answer = await super().load_jobs(job_ids)
        await self.gate.wait()
        return answer


def test_a_read_a_fold_overtook_is_not_kept() -> None:
    async def run() -> None:
        view = GatedView()
        job = view.add()
        cache, _ = cached(view)
        view.gate.clear()
        read = asyncio.create_task(cache.find(job))
        async with asyncio.timeout(5):
            while view.queries == 0:  # until the read has its (old) answer and waits
                await asyncio.sleep(0)
        view.move(job, "completed", 2)
        cache.folded({job})
        view.gate.set()
        found = await read
        assert found is not None and found[0].status == "scheduled"  # it began before the commit
        assert await status_of(cache, job) == "completed"  # the old answer was not kept
    asyncio.run(run())


def test_without_every_partition_every_read_is_a_query() -> None:
    async def run() -> None:
        view = FakeView()
        job = view.add()
        cache, coverage = cached(view, complete=False)
        for _ in range(3):
            await cache.find(job)
        assert view.queries == 3
        coverage.complete = True
        await cache.find(job)
        await cache.find(job)
        assert view.queries == 4
        cache.clear()  # the fold's partitions moved
        view.move(job, "ongoing", 1)
        assert await status_of(cache, job) == "ongoing" and view.queries == 5
    asyncio.run(run())


def test_an_answer_is_never_older_than_the_age_limit_and_the_oldest_job_goes_first() -> None:
    async def run() -> None:
        view = FakeView()
        clock = [100.0]
        cache, _ = cached(view, max_jobs=2, max_age_s=5.0, clock=clock)
        a, b, c = view.add(), view.add(), view.add()
        await cache.find(a)
        view.move(a, "ongoing", 1)  # changed by something that is not this fold (retention, say)
        clock[0] += 5.0
        assert await status_of(cache, a) == "scheduled"  # 5 s old: still within the limit
        clock[0] += 0.1
        assert await status_of(cache, a) == "ongoing"
        await cache.find(b)
        await cache.find(c)  # the third job pushes out the oldest, a
        before = view.queries
        await cache.find(c)
        await cache.find(b)
        assert view.queries == before
        await cache.find(a)
        assert view.queries == before + 1
    asyncio.run(run())


def test_a_refresh_that_fails_leaves_reads_to_the_view() -> None:
    class FailingView(FakeView):
        fail = False

        async def load_jobs(self, job_ids: list[UUID]) -> list[tuple[JobRow, list[Any] | None]]:
            if self.fail:
                self.fail = False
                raise OSError("the view is briefly unreachable")
            return await super().load_jobs(job_ids)

    async def run() -> None:
        view = FailingView()
        job = view.add()
        cache, _ = cached(view)
        await cache.find(job)
        view.move(job, "ongoing", 1)
        view.fail = True
        refresher = asyncio.create_task(cache.run())
        try:
            cache.folded({job})
            async with asyncio.timeout(5):
                while view.fail:
                    await asyncio.sleep(0.001)
            await asyncio.sleep(0)
            assert await status_of(cache, job) == "ongoing"
        finally:
            refresher.cancel()
    asyncio.run(run())


def test_the_status_use_case_checks_the_owner_and_lists_failures_from_memory_too() -> None:
    async def run() -> None:
        view = FakeView()
        theirs, failed = view.add(owner="team-b"), view.add("failed", "team-a")
        view.errors[failed] = [["S2", 1, 0, "b"], ["S1", 0, 1, "a"]]
        cache, _ = cached(view)
        jobs = JobReader(view, FakeEnds(), lambda: True, 0.3, cache)
        for _ in range(2):
            with pytest.raises(JobNotFound):
                await jobs.status(str(theirs), TEAM_A)
            answer = await jobs.status(str(failed), TEAM_A)
            assert [e.store_id for e in answer.error or []] == ["S1", "S2"]
        assert view.queries == 2  # one per job; the second round came from memory
        unknown = "3f1c2a9e-1b2c-4d5e-8f90-123456789abc"
        with pytest.raises(JobNotFound):  # not in the view: the read-your-writes wait, then 404
            await jobs.status(unknown, ANYONE)
    asyncio.run(run())


def test_from_a_folds_start_until_it_says_it_committed_reads_go_to_the_view() -> None:
    """The commit lands before the fold's coroutine resumes to say so (or its reply is lost and
    the fold retries): reads in between must not answer the cached status."""
    async def run() -> None:
        view = FakeView()
        job, other = view.add(), view.add()
        cache, _ = cached(view)
        await cache.find(job)
        await cache.find(other)
        cache.folding({job})
        view.move(job, "ongoing", 1)  # committed; the fold has not said so yet
        before = view.queries
        assert await status_of(cache, job) == "ongoing" and view.queries == before + 1
        assert await status_of(cache, other) == "scheduled" and view.queries == before + 1  # untouched: memory
        cache.folded({job})
        refresher = asyncio.create_task(cache.run())
        try:
            await refreshed(cache, view, before + 1)
            assert await status_of(cache, job) == "ongoing" and view.queries == before + 2
        finally:
            refresher.cancel()
    asyncio.run(run())


def test_reads_that_arrive_together_share_one_query() -> None:
    """Reads the cache cannot answer (here: it is off) that arrive in the same moment are one
    query, and each gets its own job's answer (or None for an unknown id)."""
    async def run() -> None:
        view = FakeView()
        jobs = [view.add() for _ in range(10)]
        view.move(jobs[3], "ongoing", 1)
        cache, _ = cached(view, complete=False)
        unknown = UUID(int=7)
        found = await asyncio.gather(*(cache.find(j) for j in [*jobs, jobs[3], unknown]))
        assert view.queries == 1
        assert [f[0].job_id for f in found[:11] if f is not None] == [*jobs, jobs[3]]
        assert found[3] is not None and found[3][0].status == "ongoing" and found[10] == found[3]
        assert found[11] is None
    asyncio.run(run())
