"""A gap in faust-streaming 0.15.3's `exactly_once`, closed here; found by the kill -9 test.

A table change is not sent when the agent makes it: faust queues its changelog record in the
producer's buffer, and a background task hands the queue to the partition's transactional
producer, one record at a time. The periodic commit adds the consumed offsets to that
transaction and commits it without waiting for the queue (its `flush()` returns once the queue
is empty, with the last record still on its way, or after 0.1 s), so a commit could cover an
event whose table changes were not in the transaction yet; a kill then lost them (measured: a
store's total one image short after the restart, twice in two runs).

`CommitGate` closes it: every changelog record is tracked until the broker has it; a commit
first waits for all of them, and the agent changes tables only between commits (it holds the
gate while it changes them, which takes no await). So a transaction holds every change made
before its offsets and none half-made; changes of events past the committed offsets may ride
along, and the task-id table makes their reprocessing a no-op.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import faust


class CommitGate:
    def __init__(self, app: faust.App) -> None:
        self.lock = asyncio.Lock()
        self._pending: set[asyncio.Future[Any]] = set()
        self._app = app

    def install(self) -> None:
        buffer, transactions = self._app.producer.buffer, self._app.consumer.transactions
        put, commit = buffer.put, transactions.commit

        def tracked_put(fut: Any) -> None:
            self._pending.add(fut)
            fut.add_done_callback(self._pending.discard)
            put(fut)

        async def gated_commit(offsets: Mapping[Any, int], start_new_transaction: bool = True) -> bool:
            async with self.lock:
                while self._pending:
                    await asyncio.wait(list(self._pending))
                return bool(await commit(offsets, start_new_transaction=start_new_transaction))

        buffer.put = tracked_put  # type: ignore[method-assign]
        transactions.commit = gated_commit  # type: ignore[method-assign]
