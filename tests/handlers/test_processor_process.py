"""Processing one task (services/processor/handlers/process.py) in-process, with fakes for
the store master and the image source: measured, failed with a reason, downloaded once, and
downloaded while the GPU slots are busy with earlier images."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from uuid import uuid4

from services.processor.handlers.process import process
from shared.events import ImageFailed, ImageSucceeded, ImageTask
from tests.handlers.fakes_processor import Images, deps_for


def task(url: str, store: str = "S1") -> ImageTask:
    return ImageTask(job_id=uuid4(), task_id="j:0:0", visit_index=0, image_index=0, store_id=store,
                     image_url=url, scheduled_time=datetime(2026, 11, 30, tzinfo=UTC))


def run(images: Images, *tasks: ImageTask) -> list[object]:
    deps = deps_for(images)

    async def all_of() -> list[object]:
        return [(await process(t, deps))[0] for t in tasks]
    return asyncio.run(all_of())


def test_an_image_is_measured_and_the_same_url_downloaded_once() -> None:
    images = Images()
    first, second = run(images, task("http://img/a.png"), task("http://img/a.png"))
    for outcome in (first, second):
        assert isinstance(outcome, ImageSucceeded)
        assert (outcome.width, outcome.height, outcome.perimeter) == (30, 20, 100)
    assert images.fetched == ["http://img/a.png"]


def test_failures_carry_their_reason_and_an_unknown_store_is_not_downloaded() -> None:
    images = Images()
    missing, unknown = run(images, task("http://img/missing.png"), task("http://img/b.png", store="NOPE"))
    assert isinstance(missing, ImageFailed) and missing.reason == "HTTP 404 from the image server"
    assert isinstance(unknown, ImageFailed) and unknown.reason == "store not found"
    assert images.fetched == ["http://img/missing.png"]


def test_images_are_downloaded_while_the_gpu_slot_is_busy_and_the_gpu_runs_one_at_a_time() -> None:
    """Four tasks, one GPU slot of 0.1 s: every image is downloaded before the first GPU turn
    ends; each task hands its download slot on (`measured`) only when its GPU turn begins, so
    measured images waiting for the GPU stay bounded; the GPU turns do not overlap."""
    images = Images()
    deps = deps_for(images, gpu_s=0.1, gpu_slots=1)
    order: list[tuple[str, int]] = []

    fetched_at_done: list[int] = []

    async def one(i: int) -> None:
        await process(task(f"http://img/{i}.png"), deps, lambda: order.append(("gpu turn", i)))
        order.append(("done", i))
        fetched_at_done.append(len(images.fetched))

    async def all_of() -> float:
        started = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(4)))
        return time.monotonic() - started
    elapsed = asyncio.run(all_of())
    assert len(images.fetched) == 4 and order[0][0] == "gpu turn"
    assert [kind for kind, _ in order] == ["gpu turn", "done"] * 4, order  # one turn at a time
    assert fetched_at_done[0] == 4  # all four downloaded while the first was on the GPU
    assert elapsed >= 0.4  # four GPU turns of 0.1 s, one after another


class Broken(Images):
    """An image source failing the way nobody planned for."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    async def fetch(self, url: str) -> bytes:
        raise self.error


def test_an_unexpected_error_fails_the_image_once_never_a_retry() -> None:
    for error in (AttributeError("bug"), KeyError("x"), ZeroDivisionError(), RuntimeError("odd")):
        [outcome] = run(Broken(error), task("http://img/a.png"))
        assert isinstance(outcome, ImageFailed) and outcome.reason == f"processing error: {type(error).__name__}"


def test_only_a_transient_infrastructure_error_is_raised_for_a_retry() -> None:
    import psycopg
    import pytest
    from psycopg_pool import PoolTimeout

    from services.processor.domain import StoreMasterNotLoaded

    for error in (StoreMasterNotLoaded("not yet"), psycopg.OperationalError("down"), PoolTimeout("busy")):
        with pytest.raises(type(error)):
            run(Broken(error), task("http://img/a.png"))
