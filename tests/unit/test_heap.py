"""A served app's garbage collector is set once its lifespan has started, and not before."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI

from shared import serve as serving
from shared.heap import YOUNG_THRESHOLD
from shared.settings import CommonSettings


@pytest.fixture
def gc_restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_serve_settles_the_heap_after_start_up_and_collects_while_serving(
        gc_restored: None, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, int, int]] = []

    def note(moment: str) -> None:
        seen.append((moment, gc.get_freeze_count(), gc.get_threshold()[0]))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        note("start")
        yield
        note("stop")

    served: list[Any] = []
    def run(server: serving.DrainingServer) -> None:  # not serving: the test runs the lifespan itself
        served.append(server.config.app)
        server.started = True
    monkeypatch.setattr(serving.DrainingServer, "run", run)
    serving.serve(FastAPI(lifespan=lifespan), CommonSettings(), port=0)

    async def run_served_lifespan() -> int:
        async with served[0].router.lifespan_context(served[0]):
            note("serving")
            await asyncio.sleep(0)
            collectors = [t for t in asyncio.all_tasks() if "collect_young" in repr(t.get_coro())]
            return len(collectors)

    assert asyncio.run(run_served_lifespan()) == 1
    assert [moment for moment, _, _ in seen] == ["start", "serving", "stop"]
    (_, frozen_at_start, young_at_start), (_, frozen_serving, young_serving), _ = seen
    assert frozen_at_start == 0 and young_at_start < YOUNG_THRESHOLD
    assert frozen_serving > 1000  # a Python process has thousands of objects alive
    assert young_serving == YOUNG_THRESHOLD
