"""Waiting on a condition with a deadline (never a bare sleep)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], deadline_s: float, what: str, every_s: float = 0.05) -> T:
    """Call `probe` until it returns a truthy value; fail naming `what` after `deadline_s`."""
    end = time.monotonic() + deadline_s
    last: T | None = None
    while time.monotonic() < end:
        last = probe()
        if last:
            return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what}; last value: {last!r}")


async def until(condition: Callable[[], object], deadline_s: float = 5.0) -> None:
    """Inside an event loop: return once `condition()` is true; TimeoutError after the deadline."""
    async with asyncio.timeout(deadline_s):
        while not condition():
            await asyncio.sleep(0.01)
