"""Waiting for a wake-up with a deadline, in a way a cancellation always ends.

Python 3.11's `asyncio.wait_for` drops a cancellation that arrives in the same turn of the
event loop as the thing it waits for (python/cpython#86296, fixed in 3.12 by building
wait_for on `asyncio.timeout`): it returns the result instead, so a `while True` loop that
waits that way for a wake-up goes round again, and a stop that cancelled it once waits for
ever. The dispatcher's lease loop did exactly that in a test. Every loop that sleeps until
woken or until a deadline waits through here, and every bounded wait inside a loop (a
readiness probe, a health probe between retries) goes through `within`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """`await awaitable`, or TimeoutError after `seconds` (it is cancelled then): wait_for's
    contract without its lost cancellation."""
    async with asyncio.timeout(seconds):
        return await awaitable


async def woken_within(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` have passed; True when it was set. A
    cancellation is raised, also when the event was set in the same turn."""
    try:
        async with asyncio.timeout(max(0.0, seconds)):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True
