"""The garbage collector, set for a long-running service process once it has started
(`shared.serve.serve` applies it; tests that build an app in-process leave the GC alone).

- **The start-up heap is frozen.** Everything a service builds while it starts (modules,
  classes, pydantic schemas, FastAPI's routes, the Kafka and database clients) lives as long as
  the process, yet CPython's full collections walk all of it each time: ~85,000 objects in
  ingest, 50-130 ms per full collection on a saturated 2-core machine, and every request in
  flight waits that long (measured in the front door benchmark). `gc.freeze()` moves what is
  alive into a permanent generation that collections skip.
- **The young generation collects every 20,000 net allocations, not 700, and at least every
  second.** CPython counts container allocations minus deallocations and collects when the
  count reaches the threshold; a processor's work comes in waves (a fetched batch of tasks,
  each with its coroutine, futures and events, freed by reference counting a few milliseconds
  later), and each wave crossed 700: the two processors of a 10,000-image burst collected
  650-800 times between them. At 20,000 it was 2, and the processors used ~8% less CPU (six
  bursts each, normalised by the image server's CPU).
  Memory that is not in a reference cycle is freed by reference counting as before. Cycles
  (an exception's traceback holding its frames, and with them a downloaded body) would wait
  for 20,000 net allocations, which counts objects, not bytes; so a timer also collects the
  young generations once a second, a few milliseconds of CPU, bounding how long a cycle lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

YOUNG_THRESHOLD = 20_000
COLLECT_YOUNG_EVERY_S = 1.0
Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def settle_heap() -> None:
    """Freeze what is alive now and raise the young generation's threshold."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


async def collect_young_regularly(every_s: float = COLLECT_YOUNG_EVERY_S) -> None:
    while True:
        await asyncio.sleep(every_s)
        gc.collect(1)  # generations 0 and 1: what is not long-lived


def settled_after_start(lifespan: Lifespan) -> Lifespan:
    """`lifespan`, with the heap settled once its start-up part has run and the young
    generations collected every second while it serves."""
    @asynccontextmanager
    async def wrapped(app: Any) -> AsyncIterator[Any]:
        async with lifespan(app) as state:
            settle_heap()
            collector = asyncio.create_task(collect_young_regularly())
            try:
                yield state
            finally:
                collector.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await collector
    return wrapped
