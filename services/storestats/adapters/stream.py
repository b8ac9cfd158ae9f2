"""The faust edge: the agent reading `<prefix>.results`, the batch writer, the pruning timer,
and faust's producer behind the ports (WindowPublisher, DeadLetters).

The agent reads without faust's automatic acks and queues each event; the writer takes what is
queued (up to BATCH, waiting at most LINGER_S for more), hands it to the use case
(handlers.StoreCounter, given by bootstrap.py) and acks the events only once it returns: faust commits only acked
offsets. (`stream.take()` would ack a batch even when its processing raised or was cancelled.)

`CoreYield` takes a reading of the other processes' CPU use every SAMPLE_S and applies the rule
of services/storestats/yielding.py: while it says wait, the writer holds the batch it took
(and the pruning timer skips its turn). The queue then fills and blocks the agent, faust's
stream buffer (STREAM_BUFFER, app.py) fills and faust stops fetching: its own flow control,
which delivers every record it fetched. (Its
`pause_partitions` does not: records of a fetch under way when a partition is paused are
dropped, never acked, and faust's commits stop at the first of them; found by
tests/faults/test_store_stats_yield.py.)"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from faust.types import EventT, StreamT
from prometheus_client import Counter, Gauge

from services.storestats.adapters import store
from services.storestats.adapters.cpu import OthersBusy
from services.storestats.app import StatsApp
from services.storestats.yielding import Mode, YieldRule, YieldState, next_state
from shared.dlq import send_to_dlq
from shared.retry import PermanentFailure, retry_record_work
from shared.runtime import retry_forever
from shared.stall import StallWatch
from shared.waits import within

log = logging.getLogger(__name__)
BATCH, LINGER_S = 500, 0.05
SAMPLE_S = 0.2  # how often the others' CPU use is read (a read of /proc/stat: ~20 µs)
# Caught up: the newest record of a batch is younger than this. (An empty queue is no proof: a
# fetch may wait FETCH_MAX_WAIT_MS at the broker, longer than the writer's linger.)
CAUGHT_UP_S = 1.0
WAITING = Gauge("imagejobs_storestats_waiting_for_cpu", "1 while counting waits for the core to leave CPU room")
WAITED = Counter("imagejobs_storestats_cpu_waits_seconds_total",
                 "Time counting waited for the core (records waiting or not)")
WAITS = Counter("imagejobs_storestats_cpu_waits_total", "Waits for the core, by how they ended", ["ended"])


class CoreYield:
    """Whether the writer may count now (`may_count`), by the rule of yielding.py on a reading of
    the others' CPU use every SAMPLE_S. `urgent()`: faust rebalances or stops, and waits for the
    events the writer holds to be acked; no wait then."""

    def __init__(self, rule: YieldRule, others_busy: Callable[[], float | None] | None = None,
                 clock: Callable[[], float] = time.monotonic, urgent: Callable[[], bool] = lambda: False) -> None:
        self.rule, self.clock, self.urgent = rule, clock, urgent
        self.others_busy = others_busy or OthersBusy()
        self.may_count = asyncio.Event()
        self.may_count.set()
        self.state = YieldState()
        self._drained = False

    def counted(self, newest_record_age_s: float) -> None:
        """The writer counted a batch whose newest record is this old: near the stream's end, it
        has caught up."""
        if newest_record_age_s < CAUGHT_UP_S:
            self._drained = True

    async def run(self) -> None:
        if self.rule.busy_above <= 0:
            return
        self.others_busy()  # the first reading only starts the interval
        while True:
            await asyncio.sleep(SAMPLE_S)
            self.step()

    def step(self) -> None:
        before, now = self.state, self.clock()
        reading = None if self.urgent() else self.others_busy()  # None: count now
        self.state = next_state(before, reading, now, self._drained, self.rule)
        self._drained = False
        if self.state.mode is Mode.WAITING:
            self.may_count.clear()
        elif before.mode is Mode.WAITING:
            self.may_count.set()
            WAITED.inc(now - before.since)
            WAITS.labels("room" if self.state.mode is Mode.COUNTING else "max wait").inc()
        WAITING.set(1 if self.state.mode is Mode.WAITING else 0)


def add_agents(stats: StatsApp, write_batch: Callable[[list[EventT]], Awaitable[None]]) -> None:
    """The agent, the writer handing each batch to `write_batch` (the use case), the CPU yield,
    the pruning timer."""
    app = stats.app
    queue: asyncio.Queue[EventT] = asyncio.Queue(maxsize=2 * BATCH)  # backpressure on the agent
    core = CoreYield(stats.settings.yield_rule, urgent=lambda: bool(app.rebalancing or app.should_stop))

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
            await core.may_count.wait()  # after the take: the writer may have sat in it, idle, when a wait began
            try:
                await write_batch(events)
            except Exception:  # a failed publish: nothing of the batch is acked; start again
                log.exception("publishing store statistics failed; exiting so that a restart redoes the batch")
                os._exit(70)
            for event in events:
                event.ack()
            stats.stall.progressed()
            core.counted(newest_record_age_s(events))

    @app.task
    async def yield_to_core() -> None:
        await core.run()

    @app.timer(interval=stats.settings.storestats_prune_every_s)
    async def prune() -> None:
        if not stats.loaded.is_set() or not core.may_count.is_set():  # waiting for the core: the next prune
            return
        try:  # an exception in a faust timer crashes the worker: a database blip waits for the next tick
            log.info("pruned %d counted images", await store.prune(stats.pool, stats.settings.storestats_keep_s))
        except Exception as exc:  # noqa: BLE001
            log.warning("pruning counted images failed (%s); trying again at the next prune", exc)


def newest_record_age_s(events: Sequence[EventT]) -> float:
    """How long ago the newest record of `events` was written (faust's timestamps are seconds)."""
    stamps = [event.message.timestamp for event in events if event.message.timestamp is not None]
    return time.time() - max(stamps) if stamps else 0.0


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
