"""Recording outcomes in batches: one transaction and one produce round for many images.

Each caller awaits its own outcome; the recorder gathers what arrives within a short window
(2 ms when quiet, `BUSY_BATCH_WAIT_MS` while outcomes stream in: shared/pacing.py), inserts
it with one `INSERT ... SELECT FROM unnest(...) ON CONFLICT (task_id) DO NOTHING`, publishes
the outcome that is recorded (its own, or the one a duplicate delivery recorded first) to the
results topic with acks=all, and only then answers each caller, which then lets its offset be
committed. A failure answers every caller of the batch with the error; they retry, and the
retry finds the rows already recorded and re-publishes the same outcomes.

Recording holds no processing slot: a processor's slots are for downloading and measuring, so
the waits of a transaction and of the broker's acknowledgement are shared by a whole batch
instead of being paid by each image.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from services.processor.domain import Size
from shared.db import columns
from shared.events import ImageFailed, ImageOutcome, ImageSucceeded, ImageTask, encode_event
from shared.pacing import Pacer
from shared.retry import is_transient
from shared.runtime import Runtime, exit_if_it_dies
from shared.waits import woken_within

# A round this large is not worth waiting longer for: in a burst the wait would only add latency
# (and hold the processor's backlog permits), not save more per-round cost.
ENOUGH_FOR_A_ROUND = 32
COLUMNS = "task_id, job_id, visit_index, image_index, store_id, image_url, width, height, perimeter, error"
INSERT = (f"INSERT INTO processor_results ({COLUMNS})"
          " SELECT * FROM unnest(%b::text[], %b::uuid[], %b::int[], %b::int[], %b::text[], %b::text[],"
          " %b::int[], %b::int[], %b::int[], %b::text[])"
          " ON CONFLICT (task_id) DO NOTHING RETURNING task_id")
STORED = "SELECT task_id, width, height, error FROM processor_results WHERE task_id = ANY(%b::text[])"
# Retention (shared/retention.py): result rows `older_than_s` after they were written, a batch
# at a time (SKIP LOCKED: processors sharing the table never wait for each other).
EXPIRE_RESULTS = (
    "DELETE FROM processor_results WHERE ctid = ANY(ARRAY(SELECT ctid FROM processor_results"
    " WHERE processed_at < now() - make_interval(secs => %(older_than_s)s::float8)"
    " LIMIT %(batch)s FOR UPDATE SKIP LOCKED))")


def _rows(outcomes: list[ImageOutcome]) -> list[tuple[Any, ...]]:
    """The outcomes as result rows, in COLUMNS order."""
    rows: list[tuple[Any, ...]] = []
    for o in outcomes:
        if isinstance(o, ImageSucceeded):
            rows.append((o.task_id, o.job_id, o.visit_index, o.image_index, o.store_id, o.image_url,
                         o.width, o.height, o.perimeter, None))
        elif isinstance(o, ImageFailed):
            rows.append((o.task_id, o.job_id, o.visit_index, o.image_index, o.store_id, o.image_url,
                         None, None, None, o.reason))
        else:
            raise TypeError(f"not an outcome: {type(o).__name__}")
    return rows


def as_recorded(attempt: ImageOutcome | ImageTask, width: int | None, height: int | None,
                error: str | None) -> ImageOutcome:
    """The outcome a stored row says, for the task `attempt` is about."""
    fields = {k: getattr(attempt, k) for k in ("job_id", "task_id", "visit_index", "image_index",
                                                 "store_id", "image_url")}
    if error is not None:
        return ImageFailed(**fields, reason=error)
    assert width is not None and height is not None
    return ImageSucceeded(**fields, width=width, height=height, perimeter=Size(width, height).perimeter)


async def recorded_outcomes(runtime: Runtime, tasks: list[ImageTask]) -> dict[str, ImageOutcome]:
    """task_id -> recorded outcome, for the tasks of `tasks` that already have a row (one query)."""
    if not tasks:
        return {}
    async with runtime.pool.connection() as conn:
        rows = await (await conn.execute(STORED, ([t.task_id for t in tasks],))).fetchall()
    by_id = {t.task_id: t for t in tasks}
    return {task_id: as_recorded(by_id[task_id], w, h, e) for task_id, w, h, e in rows}


class Recorder:
    def __init__(self, runtime: Runtime, results_topic: str, max_batch: int = 512,
                 gather_s: float = 0.002, busy_gather_s: float = 0.02) -> None:
        self._runtime = runtime
        self._topic = results_topic
        self._max_batch = max_batch
        self._gather_s = gather_s
        self._pacer = Pacer(busy_gather_s, min_expected=2)
        self._enough = asyncio.Event()  # set once ENOUGH_FOR_A_ROUND outcomes are queued
        # (outcome, its caller's future, when it was queued)
        self._queue: asyncio.Queue[tuple[ImageOutcome, asyncio.Future[ImageOutcome], float]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        exit_if_it_dies(self._task, "the result recorder")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def recorded(self, tasks: list[ImageTask]) -> dict[str, ImageOutcome]:
        """task_id -> recorded outcome, for the tasks of `tasks` that already have a row."""
        return await recorded_outcomes(self._runtime, tasks)

    async def record(self, outcome: ImageOutcome) -> ImageOutcome:
        """Record and publish `outcome` once; returns the outcome that is recorded."""
        future: asyncio.Future[ImageOutcome] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((outcome, future, time.monotonic()))
        if self._queue.qsize() >= ENOUGH_FOR_A_ROUND:
            self._enough.set()
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            # let concurrent tasks join this transaction (longer while outcomes stream in),
            # counted from the first one's arrival: one that waited through the last round goes now
            now = time.monotonic()
            wait = max(self._gather_s, self._pacer.wait_s(now)) - (now - batch[0][2])
            self._enough.clear()
            if wait > 0 and self._queue.qsize() < ENOUGH_FOR_A_ROUND:
                await woken_within(self._enough, wait)  # a burst fills a round sooner: go then
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._pacer.arrived(len(batch), time.monotonic())
            await self._round([(o, f) for o, f, _ in batch])

    async def _round(self, batch: list[tuple[ImageOutcome, asyncio.Future[ImageOutcome]]]) -> None:
        """Write and publish a round, answering each caller. A round refused for a reason other
        than the infrastructure is written one outcome at a time, so only the outcome that
        causes it fails (its caller then records a failure instead, or dead-letters the task)."""
        try:
            recorded = await self._write([o for o, _ in batch])
            await self._publish(recorded)
        except Exception as exc:  # noqa: BLE001 - each caller retries its task
            if len(batch) > 1 and not is_transient(exc):
                for one in batch:
                    await self._round([one])
                return
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, recorded, strict=True):
            if not future.done():
                future.set_result(result)

    async def _write(self, outcomes: list[ImageOutcome]) -> list[ImageOutcome]:
        async with self._runtime.pool.connection() as conn, conn.cursor() as cur:
            await cur.execute(INSERT, columns(_rows(outcomes)))
            inserted = {row[0] for row in await cur.fetchall()}
            repeats = [o.task_id for o in outcomes if o.task_id not in inserted]
            stored: dict[str, tuple[Any, ...]] = {}
            if repeats:
                await cur.execute(STORED, (repeats,))
                stored = {r[0]: r[1:] for r in await cur.fetchall()}
        first: dict[str, ImageOutcome] = {}
        for o in outcomes:
            first.setdefault(o.task_id, o)  # two deliveries of one task in a batch: the first wins
        return [first[o.task_id] if o.task_id in inserted else as_recorded(o, *stored[o.task_id])
                for o in outcomes]

    async def _publish(self, outcomes: list[ImageOutcome]) -> None:
        producer = self._runtime.producer
        # the task id as a header too, so a reader can tell which task an outcome is about without
        # decoding it (the scheduler no longer reads it: it frees places in its dispatch window
        # from the processors' committed offsets, services/scheduler/adapters/completions.py)
        acks = [await producer.send(self._topic, encode_event(o), key=str(o.job_id).encode(),
                                    headers=[("task_id", o.task_id.encode())]) for o in outcomes]
        await asyncio.gather(*acks)
