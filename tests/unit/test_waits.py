"""shared.waits: a loop that waits for a wake-up stops when cancelled, even when the wake-up
and the cancellation arrive in the same turn of the event loop (Python 3.11's wait_for
returned the wake-up there and dropped the cancellation)."""

from __future__ import annotations

import asyncio

import pytest

from shared.waits import within, woken_within


async def test_woken_when_set_and_timed_out_when_not() -> None:
    event = asyncio.Event()
    assert await woken_within(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await woken_within(event, 5.0) is True
    assert await woken_within(asyncio.Event(), -1.0) is False  # a deadline already past: no wait


async def test_a_loop_cancelled_as_it_is_woken_stops() -> None:
    event = asyncio.Event()
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            event.clear()
            await woken_within(event, 60.0)
            rounds += 1

    task = asyncio.create_task(loop())
    for _ in range(3):
        await asyncio.sleep(0)  # the loop is waiting
    event.set()
    task.cancel()  # the same turn as the wake-up
    done, _ = await asyncio.wait({task}, timeout=2.0)
    assert task in done, "the loop did not stop when cancelled"
    assert task.cancelled()
    assert rounds == 0


async def test_cancelled_while_waiting_is_cancelled() -> None:
    task = asyncio.create_task(woken_within(asyncio.Event(), 60.0))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_within_answers_in_time_and_times_out_otherwise() -> None:
    assert await within(5.0, asyncio.sleep(0, result=7)) == 7
    with pytest.raises(TimeoutError):
        await within(0.01, asyncio.Event().wait())
