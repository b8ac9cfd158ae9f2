"""Group commit: many callers' small writes in one statement.

Each caller awaits `write(items)`. The first caller's items are written at once; items from
callers who arrive while that write runs wait for it and then go together in the next one. So
an idle caller waits for nothing extra, and under load there is one write per round trip rather
than one per caller. The scheduler marks jobs released and stores dispatch cursors this way: at
100 submits/s each job fell due on its own, and one transaction per release and per dispatch
round was a third of the scheduler's CPU, with PostgreSQL's share on top (docs/benchmarks.md
"Soak").

A write that fails fails every caller whose items were in it, with the same exception; each
caller's own retry (shared/retry.py) then writes its items again, grouped with whatever waits
then. The writes must therefore be idempotent, as every write in this project is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """`write(items)` through `flush(all items waiting)`, one flush at a time (module docstring)."""

    def __init__(self, flush: Callable[[list[T]], Awaitable[None]]) -> None:
        self._flush = flush
        self._waiting: list[tuple[list[T], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def write(self, items: Iterable[T]) -> None:
        """Returns once `items` are written; raises what the write that carried them raised."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((list(items), done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_while_waiting())
        await done

    async def _flush_while_waiting(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                await self._flush([item for items, _ in group for item in items])
            except Exception as exc:  # noqa: BLE001 - handed to every caller in the group
                outcome: BaseException | None = exc
            except BaseException:  # cancelled (the service stops): nobody waits for ever
                for _, done in group + self._waiting:
                    if not done.done():
                        done.cancel()
                self._waiting = []
                raise
            else:
                outcome = None
            for _, done in group:
                if done.done():  # its caller was cancelled; the write stands (idempotent)
                    continue
                if outcome is None:
                    done.set_result(None)
                else:
                    done.set_exception(outcome)
