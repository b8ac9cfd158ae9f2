"""Processing one task (services/processor/handlers/process.py) in-process, with fakes for
the store master and the image source: measured, failed with a reason, downloaded once, and
downloaded while the GPU slots are busy with earlier images."""

from __future__ import annotations

import asyncio
import io
import random
import time
from uuid import uuid4

from PIL import Image

from services.processor.adapters.cache import DimensionCache
from services.processor.domain import ImageError
from services.processor.handlers.process import Deps, process
from shared.events import ImageFailed, ImageSucceeded, ImageTask


class Stores:
    async def exists(self, store_id: str) -> bool:
        return store_id == "S1"


class Images:
    def __init__(self) -> None:
        self.fetched: list[str] = []

    async def fetch(self, url: str) -> bytes:
        self.fetched.append(url)
        if url.endswith("missing.png"):
            raise ImageError("HTTP 404 from the image server")
        out = io.BytesIO()
        Image.new("RGB", (30, 20)).save(out, "PNG")
        return out.getvalue()


def task(url: str, store: str = "S1") -> ImageTask:
    return ImageTask(job_id=uuid4(), task_id="j:0:0", visit_index=0, image_index=0, store_id=store,
                     image_url=url, scheduled_time="2026-11-30T00:00:00Z")  # type: ignore[arg-type]


def deps_for(images: Images, gpu_s: float = 0.0, gpu_slots: int = 1) -> Deps:
    return Deps(runtime=None, fetcher=images, cache=DimensionCache(60, 100), stores=Stores(),  # type: ignore[arg-type]
                gpu_bounds=(gpu_s, gpu_s), max_pixels=10**8, rng=random.Random(1),
                gpu_slots=asyncio.Semaphore(gpu_slots))


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

    from services.processor.adapters.stores import StoreMasterNotLoaded

    for error in (StoreMasterNotLoaded("not yet"), psycopg.OperationalError("down"), PoolTimeout("busy")):
        with pytest.raises(type(error)):
            run(Broken(error), task("http://img/a.png"))
