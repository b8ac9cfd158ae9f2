"""The agent and the batch writer.

The agent reads `<prefix>.results` without faust's automatic acks and queues each event; the
writer takes what is queued (up to BATCH, waiting at most LINGER_S for more), counts the
outcomes in PostgreSQL (adapters/store.py), publishes the windows they count in, waits for the
broker's acks, and only then acks the events. faust commits only acked offsets, so a kill at
any point leaves the unfinished events to be delivered again, and counting them again changes
nothing: the counts are exact, and the latest record per (store, window) is the window's
total. (`stream.take()` would ack a batch even when its processing raised or was cancelled.)"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from faust.types import EventT, StreamT
from prometheus_client import Counter

from services.storestats.adapters import store
from services.storestats.app import StatsApp
from services.storestats.domain import Outcome, parse_outcome, published_record
from shared.runtime import retry_forever

log = logging.getLogger(__name__)
SKIPPED = Counter("imagejobs_storestats_skipped_total", "Results records not counted", ["why"])
COUNTED = Counter("imagejobs_storestats_outcomes_total", "Outcomes counted into a window (repeats included)")
BATCH, LINGER_S = 500, 0.05


def add_agents(stats: StatsApp) -> None:
    app = stats.app
    queue: asyncio.Queue[EventT] = asyncio.Queue(maxsize=4 * BATCH)  # backpressure on the agent

    @app.agent(stats.results, name="count")
    async def count(stream: StreamT) -> None:
        async for event in stream.noack().events():
            await queue.put(event)

    @app.task
    async def write() -> None:
        await stats.pool.open()
        await retry_forever("creating the store statistics tables", lambda: store.create_tables(stats.pool))
        stats.totals.update(await retry_forever("loading the store totals", lambda: store.totals(stats.pool)))
        stats.loaded.set()
        while True:
            events = await take(queue)
            try:
                await write_batch(stats, events)
            except Exception:  # a failed publish: nothing of the batch is acked; start again
                log.exception("publishing store statistics failed; exiting so that a restart redoes the batch")
                os._exit(70)
            for event in events:
                event.ack()

    @app.timer(interval=600.0)
    async def prune() -> None:
        if not stats.loaded.is_set():
            return
        try:  # an exception in a faust timer crashes the worker: a database blip waits for the next tick
            log.info("pruned %d counted images", await store.prune(stats.pool, stats.settings.storestats_keep_s))
        except Exception as exc:  # noqa: BLE001
            log.warning("pruning counted images failed (%s); next try in 10 minutes", exc)


async def take(queue: asyncio.Queue[EventT]) -> list[EventT]:
    """The next events: at least one, at most BATCH, waiting at most LINGER_S for more."""
    events = [await queue.get()]
    deadline = time.monotonic() + LINGER_S
    while len(events) < BATCH:
        try:
            events.append(queue.get_nowait())
        except asyncio.QueueEmpty:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                events.append(await asyncio.wait_for(queue.get(), left))
            except TimeoutError:
                break
    return events


def outcomes_of(events: list[EventT]) -> list[Outcome]:
    out = []
    for event in events:
        try:
            outcome = parse_outcome(event.value)
        except ValueError as exc:  # poison: skipped (and counted), never retried for ever
            log.warning("skipping an undecodable results record: %s", str(exc)[:200])
            SKIPPED.labels("undecodable").inc()
            continue
        if outcome is None:
            SKIPPED.labels("not an outcome").inc()
        else:
            out.append(outcome)
    return out


async def write_batch(stats: StatsApp, events: list[EventT]) -> None:
    """Count the batch, publish its windows and wait for the acks; refresh the stores' totals."""
    outcomes = outcomes_of(events)
    if not outcomes:
        return
    size = stats.settings.storestats_window_s
    windows = await retry_forever("counting store statistics", lambda: store.count(stats.pool, outcomes, size))
    sent: list[Any] = []
    for window in windows:
        key, value = published_record(window, size)
        sent.append(await stats.app.producer.send(stats.settings.stats_topic, key, value, None, None, None))
    await asyncio.gather(*sent)
    stores = sorted({o.store_id for o in outcomes})
    stats.totals.update(await retry_forever("reading store totals", lambda: store.totals(stats.pool, stores)))
    COUNTED.inc(len(outcomes))
