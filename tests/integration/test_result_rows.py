"""The processors' result rows, written by the recorder's one statement (array parameters in
binary, services/processor/adapters/results.py) on a scratch database: every kind of batch a
burst makes (all succeeded, all failed, so a column of nothing but NULLs, mixed, values past
a small integer's range, a repeat of a recorded task) is stored as given, and a repeat gets
the outcome recorded first. On the services' own pool (shared.db.make_pool), and more often
than psycopg's threshold for preparing a statement, so the prepared path runs too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

from services.processor.adapters.results import Recorder, recorded_outcomes
from shared.db import make_pool
from shared.events import ImageFailed, ImageOutcome, ImageSucceeded, ImageTask
from tests.support.fold import ScratchView
from tests.support.jobs import JobEvents


def big(job: JobEvents, v: int, i: int) -> ImageSucceeded:
    """An outcome whose numbers need four bytes (binary arrays are typed by their largest value)."""
    ok = job.ok("S1", v, i)
    return ok.model_copy(update={"width": 70_000, "height": 40_000, "perimeter": 220_000})


def content(outcome: ImageOutcome) -> dict[str, Any]:
    return outcome.model_dump(exclude={"event_id", "occurred_at"})


def task_of(outcome: ImageOutcome) -> ImageTask:
    return ImageTask(job_id=outcome.job_id, task_id=outcome.task_id, visit_index=outcome.visit_index,
                     image_index=outcome.image_index, store_id=outcome.store_id, image_url=outcome.image_url,
                     scheduled_time=outcome.occurred_at)


@asynccontextmanager
async def runtime_on(url: str) -> AsyncIterator[Any]:
    """What the recorder reads of a runtime (its pool, the services' own) on the scratch database."""
    async with make_pool(url, max_size=1) as pool:
        await pool.wait()
        yield SimpleNamespace(pool=pool)


async def write_batches(url: str, batches: list[list[ImageOutcome]]) -> tuple[list[list[ImageOutcome]], list[Any]]:
    """Each batch written as the recorder writes it; then the rows of the batches' jobs."""
    async with runtime_on(url) as runtime:
        pool = runtime.pool
        recorder = Recorder(runtime, "unused-topic")
        answers = [await recorder._write(batch) for batch in batches]
        job_ids = list({o.job_id for batch in batches for o in batch})
        async with pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT task_id, width, height, perimeter, error FROM processor_results WHERE job_id = ANY(%s)"
                " ORDER BY task_id", (job_ids,))).fetchall()
    return answers, rows


def test_every_kind_of_batch_is_stored_as_given(scratch: ScratchView) -> None:
    job = JobEvents.new(("S1", 8), ("S2", 12))
    succeeded = [job.ok("S1", 0, 0), job.ok("S1", 0, 1)]
    failed = [job.bad("S1", 0, 2), job.bad("S1", 0, 3, reason='quote " and backslash \\ and comma ,')]
    mixed = [job.ok("S1", 0, 4), job.bad("S1", 0, 5), big(job, 0, 6)]
    repeat = [job.bad("S1", 0, 0, reason="a second try failed"), job.ok("S1", 0, 7)]

    # past psycopg's threshold: a statement is prepared on its sixth run with the same parameter
    # types (here those of `repeat`: small numbers, and a failure beside each success)
    more = [[job.ok("S2", 1, 2 * i), job.bad("S2", 1, 2 * i + 1)] for i in range(6)]

    answers, rows = asyncio.run(write_batches(scratch.url, [succeeded, failed, mixed, repeat, *more]))

    assert answers[:3] == [succeeded, failed, mixed]
    assert answers[4:] == more
    # the repeat is answered with the outcome recorded first (a new event saying the same)
    assert [content(o) for o in answers[3]] == [content(succeeded[0]), content(repeat[1])]
    stored = [*succeeded, *failed, *mixed, repeat[1], *(o for batch in more for o in batch)]
    expected = {o.task_id: (o.width, o.height, o.perimeter, None) if isinstance(o, ImageSucceeded)
                else (None, None, None, o.reason) for o in stored}
    assert {task_id: tuple(rest) for task_id, *rest in rows} == expected


def test_recorded_outcomes_finds_only_the_recorded_tasks(scratch: ScratchView) -> None:
    job = JobEvents.new(("S1", 3))
    recorded = [job.ok("S1", 0, 0), job.bad("S1", 0, 1)]
    asyncio.run(write_batches(scratch.url, [recorded]))
    tasks = [task_of(o) for o in [*recorded, job.ok("S1", 0, 2)]]

    async def look_up() -> dict[str, ImageOutcome]:
        async with runtime_on(scratch.url) as runtime:
            return await recorded_outcomes(runtime, tasks)

    found = asyncio.run(look_up())
    assert set(found) == {recorded[0].task_id, recorded[1].task_id}
    assert isinstance(found[recorded[0].task_id], ImageSucceeded)
    assert found[recorded[0].task_id].perimeter == recorded[0].perimeter  # type: ignore[union-attr]
    assert isinstance(found[recorded[1].task_id], ImageFailed)
    assert found[recorded[1].task_id].reason == recorded[1].reason  # type: ignore[union-attr]
