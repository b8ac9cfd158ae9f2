"""Recording outcomes in batches: one transaction (one WAL flush) for many result rows.

Each caller awaits its own outcome; the writer gathers what arrives within a few
milliseconds, inserts it with `ON CONFLICT (task_id) DO NOTHING`, and answers each caller
with the row that is recorded: its own, or the one a duplicate delivery recorded first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from shared.events import ImageFailed, ImageSucceeded
from shared.runtime import Runtime, exit_if_it_dies

Outcome = ImageSucceeded | ImageFailed
INSERT = ("INSERT INTO processor_results (task_id, job_id, visit_index, image_index, store_id, image_url,"
          " width, height, perimeter, error) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
          " ON CONFLICT (task_id) DO NOTHING RETURNING task_id")


def _row(o: Outcome) -> tuple[Any, ...]:
    ok = isinstance(o, ImageSucceeded)
    return (o.task_id, o.job_id, o.visit_index, o.image_index, o.store_id, o.image_url,
            o.width if ok else None, o.height if ok else None,  # type: ignore[union-attr]
            o.perimeter if ok else None, None if ok else o.reason)  # type: ignore[union-attr]


def as_recorded(attempt: Outcome, width: int | None, height: int | None, error: str | None) -> Outcome:
    """The outcome a stored row says, for the task `attempt` is about."""
    fields = {k: getattr(attempt, k) for k in ("job_id", "task_id", "visit_index", "image_index",
                                                 "store_id", "image_url")}
    if error is not None:
        return ImageFailed(**fields, reason=error)
    assert width is not None and height is not None
    return ImageSucceeded(**fields, width=width, height=height, perimeter=2 * (width + height))


class ResultWriter:
    def __init__(self, runtime: Runtime, max_batch: int = 256, gather_s: float = 0.003) -> None:
        self._runtime = runtime
        self._max_batch = max_batch
        self._gather_s = gather_s
        self._queue: asyncio.Queue[tuple[Outcome, asyncio.Future[Outcome]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        exit_if_it_dies(self._task, "the result writer")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def record(self, outcome: Outcome) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        await self._queue.put((outcome, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            await asyncio.sleep(self._gather_s)  # let concurrent tasks join this transaction
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                recorded = await self._write([o for o, _ in batch])
            except Exception as exc:  # noqa: BLE001 - each caller retries its task
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, recorded, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _write(self, outcomes: list[Outcome]) -> list[Outcome]:
        async with self._runtime.pool.connection() as conn, conn.cursor() as cur:
            await cur.executemany(INSERT, [_row(o) for o in outcomes], returning=True)
            inserted: set[str] = set()
            while True:
                row = await cur.fetchone()
                if row:
                    inserted.add(row[0])
                if not cur.nextset():
                    break
            repeats = [o.task_id for o in outcomes if o.task_id not in inserted]
            stored: dict[str, tuple[Any, ...]] = {}
            if repeats:
                await cur.execute("SELECT task_id, width, height, error FROM processor_results"
                                  " WHERE task_id = ANY(%s)", (repeats,))
                stored = {r[0]: r[1:] for r in await cur.fetchall()}
        first: dict[str, Outcome] = {}
        for o in outcomes:
            first.setdefault(o.task_id, o)  # two deliveries of one task in a batch: the first wins
        return [first[o.task_id] if o.task_id in inserted else as_recorded(o, *stored[o.task_id])
                for o in outcomes]
