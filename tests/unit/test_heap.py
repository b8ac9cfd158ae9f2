"""The start-up heap is frozen once a service's lifespan has started, and not before."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shared.heap import frozen_after_start


def test_the_heap_is_frozen_after_start_up_and_the_lifespan_still_runs_both_halves() -> None:
    seen: list[tuple[str, int]] = []

    @asynccontextmanager
    async def lifespan(_: object) -> AsyncIterator[str]:
        seen.append(("start", gc.get_freeze_count()))
        yield "state"
        seen.append(("stop", gc.get_freeze_count()))

    async def run() -> str:
        async with frozen_after_start(lifespan)(object()) as state:
            seen.append(("serving", gc.get_freeze_count()))
            return str(state)

    gc.unfreeze()
    try:
        assert asyncio.run(run()) == "state"
    finally:
        gc.unfreeze()
    (start, at_start), (serving, while_serving), (stop, _) = seen
    assert (start, serving, stop) == ("start", "serving", "stop")
    assert at_start == 0 and while_serving > 1000  # a Python process has thousands of objects alive
