"""The faust edge: the agent reading `<prefix>.results`, the batch writer, the pruning timer,
and faust's producer behind the ports (WindowPublisher, DeadLetters).

The agent reads without faust's automatic acks and queues each event; the writer takes what is
queued (up to BATCH, waiting at most LINGER_S for more), hands it to the use case
(handlers.StoreCounter, given by bootstrap.py) and acks the events only once it returns: faust commits only acked
offsets. (`stream.take()` would ack a batch even when its processing raised or was cancelled.)"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from faust.types import EventT, StreamT

from services.storestats.adapters import store
from services.storestats.app import StatsApp
from shared.dlq import send_to_dlq
from shared.retry import PermanentFailure, retry_record_work
from shared.runtime import retry_forever
from shared.stall import StallWatch
from shared.waits import within

log = logging.getLogger(__name__)
BATCH, LINGER_S = 500, 0.05


def add_agents(stats: StatsApp, write_batch: Callable[[list[EventT]], Awaitable[None]]) -> None:
    """The agent, the writer handing each batch to `write_batch` (the use case), the pruning timer."""
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
                await write_batch(events)
            except Exception:  # a failed publish: nothing of the batch is acked; start again
                log.exception("publishing store statistics failed; exiting so that a restart redoes the batch")
                os._exit(70)
            for event in events:
                event.ack()
            stats.stall.progressed()

    @app.timer(interval=stats.settings.storestats_prune_every_s)
    async def prune() -> None:
        if not stats.loaded.is_set():
            return
        try:  # an exception in a faust timer crashes the worker: a database blip waits for the next tick
            log.info("pruned %d counted images", await store.prune(stats.pool, stats.settings.storestats_keep_s))
        except Exception as exc:  # noqa: BLE001
            log.warning("pruning counted images failed (%s); trying again at the next prune", exc)


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
                events.append(await within(left, queue.get()))
            except TimeoutError:
                break
    return events


class WindowTopic:
    """WindowPublisher on faust's producer: every record sent, then all acks awaited."""

    def __init__(self, stats: StatsApp) -> None:
        self._stats = stats

    async def publish(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        producer, topic = self._stats.app.producer, self._stats.settings.stats_topic
        sent = [await producer.send(topic, key, value, None, None, None) for key, value in records]
        await asyncio.gather(*sent)


class FaustDeadLetters:
    """DeadLetters: the record, whole, to the core's DLQ topic (shared/dlq.py), from faust's
    producer; the stall watch hears the reason."""

    def __init__(self, stats: StatsApp) -> None:
        self._stats = stats

    async def dead_letter(self, record: EventT, reason: str) -> None:
        stats = self._stats
        stats.stall.failed(reason)
        message, producer = FaustRecord(record.message), FaustProducer(stats.app.producer)
        try:
            await retry_record_work("dead-lettering a record", lambda: send_to_dlq(
                producer, stats.settings.topics.dlq, "storestats", message, reason))
        except PermanentFailure as failure:
            log.error("could not dead-letter %s[%d]@%d; skipping it: %s", message.topic, message.partition,
                      message.offset, failure)


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
