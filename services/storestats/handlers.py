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
from services.storestats.domain import Outcome, WindowStats, parse_outcome, published_record
from shared.dlq import send_to_dlq
from shared.retry import PermanentFailure, isolating, retry_record_work
from shared.runtime import retry_forever
from shared.stall import StallWatch

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
            events = await take(queue, stats.stall)
            try:
                await write_batch(stats, events)
            except Exception:  # a failed publish: nothing of the batch is acked; start again
                log.exception("publishing store statistics failed; exiting so that a restart redoes the batch")
                os._exit(70)
            for event in events:
                event.ack()
            stats.stall.progressed()

    @app.timer(interval=600.0)
    async def prune() -> None:
        if not stats.loaded.is_set():
            return
        try:  # an exception in a faust timer crashes the worker: a database blip waits for the next tick
            log.info("pruned %d counted images", await store.prune(stats.pool, stats.settings.storestats_keep_s))
        except Exception as exc:  # noqa: BLE001
            log.warning("pruning counted images failed (%s); next try in 10 minutes", exc)


async def take(queue: asyncio.Queue[EventT], stats_progress: StallWatch) -> list[EventT]:
    """The next events: at least one, at most BATCH, waiting at most LINGER_S for more."""
    events = [await queue.get()]
    stats_progress.progressed()  # the writer takes new events: what it waits on is the stream
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


def outcomes_of(events: list[EventT]) -> tuple[list[tuple[EventT, Outcome]], list[tuple[EventT, str]]]:
    """(event, outcome) of the outcomes, and (event, reason) of the records that are not events
    at all (poison: dead-lettered, never retried for ever); other event types are skipped."""
    out, poison = [], []
    for event in events:
        try:
            outcome = parse_outcome(event.value)
        except ValueError as exc:
            SKIPPED.labels("undecodable").inc()
            poison.append((event, f"undecodable: {exc}"))
            continue
        if outcome is None:
            SKIPPED.labels("not an outcome").inc()
        else:
            out.append((event, outcome))
    return out, poison


async def write_batch(stats: StatsApp, events: list[EventT]) -> None:
    """Count the batch, publish its windows and wait for the acks; refresh the stores' totals.
    Poison and any outcome the database refuses for good go to the DLQ, the rest is counted."""
    counted, poison = outcomes_of(events)
    for event, reason in poison:
        await dead_letter(stats, event, reason)
    windows = await count_isolating(stats, counted)
    outcomes = [o for _, o in counted]
    if not outcomes:
        return
    size = stats.settings.storestats_window_s
    sent: list[Any] = []
    for window in windows:
        key, value = published_record(window, size)
        sent.append(await stats.app.producer.send(stats.settings.stats_topic, key, value, None, None, None))
    await asyncio.gather(*sent)
    stores = sorted({o.store_id for o in outcomes})
    stats.totals.update(await retry_record_work("reading store totals", lambda: store.totals(stats.pool, stores)))
    COUNTED.inc(len(outcomes))


async def count_isolating(stats: StatsApp, counted: list[tuple[EventT, Outcome]]) -> list[WindowStats]:
    """Count the outcomes; a batch the database refuses for good is split in halves until the
    refused outcome is alone, which is dead-lettered (the rest is counted)."""
    if not counted:
        return []
    size, outcomes = stats.settings.storestats_window_s, [o for _, o in counted]
    try:
        return await retry_record_work("counting store statistics", lambda: store.count(stats.pool, outcomes, size))
    except PermanentFailure as failure:
        if len(counted) == 1:
            await dead_letter(stats, counted[0][0], f"refused: {failure}")
            return []
        token = isolating.set(True)
        try:
            middle = len(counted) // 2
            return [*await count_isolating(stats, counted[:middle]), *await count_isolating(stats, counted[middle:])]
        finally:
            isolating.reset(token)


async def dead_letter(stats: StatsApp, event: EventT, reason: str) -> None:
    """The record, whole, to the core's DLQ topic (shared/dlq.py), from faust's producer."""
    stats.stall.failed(reason)
    record, producer = FaustRecord(event.message), FaustProducer(stats.app.producer)
    try:
        await retry_record_work("dead-lettering a record", lambda: send_to_dlq(
            producer, stats.settings.topics.dlq, "storestats", record, reason))
    except PermanentFailure as failure:
        log.error("could not dead-letter %s[%d]@%d; skipping it: %s", record.topic, record.partition,
                  record.offset, failure)


class FaustRecord:
    """A faust message as shared/dlq.py reads a record (timestamps in ms, headers as pairs)."""

    def __init__(self, message: Any) -> None:
        self.topic, self.partition, self.offset = message.topic, message.partition, message.offset
        self.timestamp = int(message.timestamp * 1000) if message.timestamp is not None else None
        self.key, self.value = message.key, message.value
        headers = message.headers or []
        self.headers = list(headers.items()) if isinstance(headers, dict) else list(headers)


class FaustProducer:
    """faust's producer behind the keyword signature shared/dlq.py calls."""

    def __init__(self, producer: Any) -> None:
        self._producer = producer

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                            headers: list[tuple[str, bytes]] | None = None) -> Any:
        return await self._producer.send_and_wait(topic, key, value, None, None, headers)
