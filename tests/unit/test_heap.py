"""A service's garbage collector is set once its lifespan has started, and not before."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shared.heap import YOUNG_THRESHOLD, settled_after_start


def test_the_heap_is_settled_after_start_up_and_the_lifespan_still_runs_both_halves() -> None:
    seen: list[tuple[str, int, int]] = []

    def note(moment: str) -> None:
        seen.append((moment, gc.get_freeze_count(), gc.get_threshold()[0]))

    @asynccontextmanager
    async def lifespan(_: object) -> AsyncIterator[str]:
        note("start")
        yield "state"
        note("stop")

    async def run() -> str:
        async with settled_after_start(lifespan)(object()) as state:
            note("serving")
            return str(state)

    threshold = gc.get_threshold()
    gc.unfreeze()
    try:
        assert asyncio.run(run()) == "state"
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
    assert [moment for moment, _, _ in seen] == ["start", "serving", "stop"]
    (_, frozen_at_start, young_at_start), (_, frozen_serving, young_serving), _ = seen
    assert frozen_at_start == 0 and young_at_start == threshold[0] < YOUNG_THRESHOLD
    assert frozen_serving > 1000  # a Python process has thousands of objects alive
    assert young_serving == YOUNG_THRESHOLD
