"""Group commit: many callers' small writes in one statement.

Each caller awaits `write(items)`. A write starts `linger_s` after the first caller's items
arrive and carries everything that arrived by then; items arriving while it runs go in the next
one. So under load there is one write per `linger_s` (or per round trip) rather than one per
caller, and a caller waits `linger_s` longer (and for a write already running). Only for writes
nobody waits on to see a result: the scheduler marks jobs released (the `JobReleased` event is already out; the mark
only tells a restart not to release them again) and stores dispatch cursors this way. At 100
submits/s each job fell due on its own, and a transaction per release and per dispatch round
was a third of the scheduler's CPU, with PostgreSQL's share on top (docs/benchmarks.md "Soak").

A write that fails fails every caller whose items were in it, with the same exception; each
caller's own retry (shared/retry.py) then writes its items again, grouped with whatever waits
then. The writes must therefore be idempotent, as every write in this project is.

`GroupCall` is the same for callers that need an answer per item: its flush returns one result
per item, in order, and each caller gets its own. The status service records webhook attempts
this way: at the end of a burst a thousand jobs become final within a second, and a
transaction per attempt held each delivery ~10 ms on a busy database (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Batches(Generic[T, R]):
    """The waiting callers' items, flushed together one flush at a time (module docstring);
    `flush` returns one result per item, in order, or None when there are none to hand back."""

    def __init__(self, flush: Callable[[list[T]], Awaitable[Sequence[R] | None]], linger_s: float = 0.0) -> None:
        self._flush = flush
        self._linger_s = linger_s
        self._waiting: list[tuple[list[T], asyncio.Future[list[R] | None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def _submit(self, items: list[T]) -> list[R] | None:
        """The results of `items` once they are written; raises what the write that carried them raised."""
        done: asyncio.Future[list[R] | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((items, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_while_waiting())
        return await done

    async def _flush_while_waiting(self) -> None:
        while self._waiting:
            group: list[tuple[list[T], asyncio.Future[list[R] | None]]] = []
            results: Sequence[R] | None = None
            answers: list[list[R] | None] = []
            try:
                await asyncio.sleep(self._linger_s)
                group, self._waiting = self._waiting, []
                results = await self._flush([item for items, _ in group for item in items])
                at = 0
                for items, _ in group:  # each caller's slice (here: a flush answering badly fails them all)
                    answers.append(None if results is None else list(results[at:at + len(items)]))
                    at += len(items)
                if results is not None and at != len(results):
                    raise ValueError(f"a flush of {at} items answered {len(results)} results")
            except Exception as exc:  # noqa: BLE001 - handed to every caller in the group
                outcome: BaseException | None = exc
            except BaseException:  # cancelled: only when the loop is torn down; nobody waits for ever
                # (cancelled, not failed: a failure would make each caller's task report a death
                # while the service is stopping anyway)
                for _, done in group + self._waiting:
                    if not done.done():
                        done.cancel()
                self._waiting = []
                raise
            else:
                outcome = None
            for i, (_, done) in enumerate(group):
                if done.done():  # its caller was cancelled; the write stands (idempotent)
                    continue
                if outcome is None:
                    done.set_result(answers[i])
                else:
                    done.set_exception(outcome)


class GroupCommit(_Batches[T, None]):
    """`write(items)` through `flush(all items waiting)`, one flush at a time (module docstring)."""

    def __init__(self, flush: Callable[[list[T]], Awaitable[None]], linger_s: float = 0.0) -> None:
        super().__init__(flush, linger_s)

    async def write(self, items: Iterable[T]) -> None:
        """Returns once `items` are written; raises what the write that carried them raised."""
        await self._submit(list(items))


class GroupCall(_Batches[T, R]):
    """`call(item)` through `flush(all items waiting) -> their results, in order`: each caller
    gets its item's result (module docstring)."""

    def __init__(self, flush: Callable[[list[T]], Awaitable[Sequence[R]]], linger_s: float = 0.0) -> None:
        super().__init__(flush, linger_s)

    async def call(self, item: T) -> R:
        """`item`'s result once it is written; raises what the write that carried it raised."""
        results = await self._submit([item])
        assert results is not None and len(results) == 1, "a GroupCall flush returns one result per item"
        return results[0]
