"""The one consumer loop every Kafka-reading service runs: subscribe, fetch a batch, decode,
dead-letter what cannot be decoded, hand the typed events to the service's handler, and
commit after the handler's effect (or leave offsets to the handler).

A service supplies only:
- its handler (`Handler`: `async (Batch) -> None`), which returns once the batch's effect is durable;
- its offset policy: `commit="after_batch"` (commit the batch's offsets once the handler
  returned: the scheduler) or `commit="by_handler"` (the handler stores offsets itself: the
  status view keeps them in its own transaction, the processor commits below its lowest task
  in flight);
- optionally a rebalance listener and the event types it accepts (others are dead-lettered).

While the stream is busy the loop lets fetches wait at the broker for up to
`BUSY_BATCH_WAIT_MS` (shared/pacing.py), so a trickle of hundreds of events a second arrives
in rounds of several instead of one fetch, one transaction and one commit per event; a quiet
stream fetches as before, answered by the first record.

The loop reports the service ready (check `consumer`) once it has joined and while it makes
progress (a consumer with lag that makes none for `STALL_S` is not ready, and says why), lets
the runtime report its lag on a timer, and counts consumed events by type.

No fetch waits for ever: aiokafka waits without a limit while its consumer joins the group, so
each fetch is bounded; a consumer with no assignment for 10 s is not ready, and one that has
waited `CONSUMER_REJOIN_DEADLINE_S` is replaced by a new one, which joins afresh.

A batch the handler cannot apply for a reason retrying does not cure (`PermanentFailure`: the
database refuses a value, a bug) is split in halves until the record that causes it is alone;
that record is dead-lettered with the error and the rest is applied, so one record never
stops a partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition

from shared.dlq import DeadLetterable, send_to_dlq
from shared.events import Event, EventUnion, decode_event
from shared.kafka import BUSY_FETCH_MIN_BYTES, consumer_options, set_fetch_wait
from shared.metrics import CONSUMER_STALLED, CONSUMERS_REPLACED, EVENTS_CONSUMED
from shared.pacing import Pacer
from shared.retry import PermanentFailure, isolating, retry_record_work
from shared.runtime import Runtime, consumer_lag, fetch_batch, retry_forever
from shared.settings import CommonSettings
from shared.stall import JoinWatch, StallWatch

log = logging.getLogger(__name__)
BUSY_POLL_MS = 50
REPLACE_CLOSE_S = 10.0  # leaving a stuck consumer: longer, and the process exits instead
SKIP_LOOKS_AT = 512  # the envelope comes first: a type is within this many bytes of the start
Record: TypeAlias = ConsumerRecord[Any, Any]  # as fetched: key and value bytes, or None (a tombstone)


@dataclass(frozen=True)
class Delivery:
    """One record of a batch: where it came from and its event (None: undecodable, already
    dead-lettered; its offset still counts)."""

    tp: TopicPartition
    offset: int
    timestamp_ms: int
    event: EventUnion | None
    record: DeadLetterable  # the raw record, to dead-letter it whole


@dataclass
class Batch:
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def events(self) -> list[EventUnion]:
        return [d.event for d in self.deliveries if d.event is not None]

    def next_offsets(self) -> dict[TopicPartition, int]:
        """partition -> the offset after its last record in this batch (Kafka's convention)."""
        return {d.tp: d.offset + 1 for d in self.deliveries}


# What a service hands the loop: applies a batch and returns once its effect is durable.
Handler: TypeAlias = Callable[[Batch], Awaitable[None]]
# Told of each decoded event the handler refused for good, with the reason (after it was dead-lettered).
Refused: TypeAlias = Callable[[EventUnion, str], Awaitable[None]]


class ConsumerLoop:
    def __init__(self, settings: CommonSettings, runtime: Runtime, service: str, topics: list[str],
                 handle: Handler, *, commit: Literal["after_batch", "by_handler"],
                 listener: ConsumerRebalanceListener | None = None, accept: tuple[type[Event], ...] | None = None,
                 max_records: int = 2000, timeout_ms: int = 500, refused: Refused | None = None,
                 skip: tuple[str, ...] = (), make_consumer: Callable[[], AIOKafkaConsumer] | None = None) -> None:
        """`refused(event, reason)`, when given, is told of each decoded event the handler
        refused for good (after it was dead-lettered), so the service can still end its job
        with a reason. `skip`: event types the service has no use for (often its own output
        coming back on a topic it reads): their records are passed over without being decoded.
        `make_consumer` builds the Kafka consumer (tests hand in their own)."""
        self.settings, self.runtime, self.service = settings, runtime, service
        self.topics, self.handle, self.commit = topics, handle, commit
        self.listener, self.accept, self.refused = listener, accept, refused
        # how `encode_event` writes the type (compact JSON), looked for near the start of a record
        self._skip = tuple(f'"type":"{kind}"'.encode() for kind in skip)
        self.max_records, self.timeout_ms = max_records, timeout_ms
        self.consumer: AIOKafkaConsumer | None = None
        self.consuming = False
        self.pacer = Pacer(settings.busy_batch_wait_ms / 1000)
        self._busy = False
        self.stall = StallWatch(settings.stall_s)
        self.joining = JoinWatch(settings.consumer_rejoin_deadline_s)
        self._make_consumer = make_consumer or (lambda: AIOKafkaConsumer(**consumer_options(settings, service)))
        runtime.add_check("consumer", self.ready)

    async def run(self) -> None:
        """Consume for ever (cancel to stop; `close()` then leaves the group)."""
        await self.runtime.connected.wait()
        await self._join()
        while True:
            # while busy, come back often so that the switch to quiet follows the rate closely
            timeout_ms = min(self.timeout_ms, BUSY_POLL_MS) if self._busy else self.timeout_ms
            records = await self._fetch(timeout_ms)
            if records is None:  # still waiting for the group to assign partitions
                continue
            self._pace(sum(len(r) for r in records.values()))
            if not records:
                self.stall.progressed()  # caught up: nothing waits for this consumer
                continue
            batch = await self._decode(records)
            await self._apply(batch)
            self.stall.progressed()
            if self.commit == "after_batch":
                await retry_forever("committing offsets", self.consumer.commit)

    async def _join(self) -> None:
        """A new consumer, subscribed: it joins the group on its first fetch."""
        self.consumer = self._make_consumer()
        await retry_forever(f"starting the {self.service} consumer", self.consumer.start)
        self.consumer.subscribe(self.topics, listener=self.listener)
        self.runtime.track_consumer(self.consumer)
        self.joining.restart()
        self.consuming = True

    async def _fetch(self, timeout_ms: int) -> dict[TopicPartition, list[Record]] | None:
        """One fetch, bounded. aiokafka's `getmany` waits without any limit while the consumer
        (re)joins its group, and a join that never completes (seen once after a broker restart:
        the status view stopped folding for good, with nothing logged) would park this loop for
        ever. None: no assignment yet; after `CONSUMER_REJOIN_DEADLINE_S` of that the consumer
        is replaced by a new one, which joins afresh."""
        assert self.consumer is not None
        try:
            async with asyncio.timeout(timeout_ms / 1000 + self.joining.grace_s):
                records = await fetch_batch(self.consumer, self.service, timeout_ms=timeout_ms,
                                            max_records=self.max_records)
        except TimeoutError:
            waited = self.joining.waiting(time.monotonic())
            log.warning("%s: no partitions assigned by the group after %.0fs", self.service, waited)
            if self.joining.overdue(time.monotonic()):
                await self._replace_consumer(waited)
            return None
        self.joining.joined()
        return records

    async def _replace_consumer(self, waited: float) -> None:
        """Leave the stuck consumer (bounded: a join that never ends may not close either; then
        this loop ends with the error, and the service's `exit_if_it_dies` watch on it takes the
        process down for the supervisor to restart) and join with a new one."""
        old, self.consuming = self.consumer, False
        assert old is not None
        log.error("%s: the Kafka consumer has waited %.0fs for the group to assign partitions; "
                  "replacing it with a new one", self.service, waited)
        CONSUMERS_REPLACED.labels(self.service).inc()
        self.runtime.untrack_consumer(old)
        try:
            async with asyncio.timeout(REPLACE_CLOSE_S):
                await old.stop()
        except TimeoutError:
            raise RuntimeError(f"{self.service}: a consumer stuck in its group join did not close "
                               f"in {REPLACE_CLOSE_S:.0f}s") from None
        await self._join()

    def _pace(self, count: int) -> None:
        """Let the next fetches wait for a larger round while busy, and not at all when quiet."""
        now = time.monotonic()
        self.pacer.arrived(count, now)
        busy = self.pacer.busy(now)
        if busy != self._busy and self.consumer is not None:
            self._busy = busy
            if busy:  # never a shorter wait or a smaller round than the quiet settings ask for
                set_fetch_wait(self.consumer, max(BUSY_FETCH_MIN_BYTES, self.settings.kafka_fetch_min_bytes),
                               min(self.settings.busy_batch_wait_ms, self.settings.kafka_fetch_max_wait_ms))
            else:
                set_fetch_wait(self.consumer, self.settings.kafka_fetch_min_bytes,
                               self.settings.kafka_fetch_max_wait_ms)

    async def _apply(self, batch: Batch) -> None:
        """The handler's effect for the batch; a record it refuses for good is isolated and
        dead-lettered, and the rest applied (its offset still counts)."""
        try:
            await self.handle(batch)
        except PermanentFailure as failure:
            self.stall.failed(str(failure))
            token = isolating.set(True)
            try:
                await self._isolate(batch, failure)
            finally:
                isolating.reset(token)

    async def _isolate(self, batch: Batch, failure: PermanentFailure) -> None:
        decoded = [i for i, d in enumerate(batch.deliveries) if d.event is not None]
        if len(decoded) <= 1:
            for delivery in (batch.deliveries[i] for i in decoded):
                reason = f"refused: {failure}"
                await self.dead_letter(delivery.record, reason)
                if self.refused is not None and delivery.event is not None:
                    await self.refused(delivery.event, reason)
            await self.handle(Batch([replace(d, event=None) for d in batch.deliveries]))  # offsets only
            return
        middle = decoded[len(decoded) // 2]  # both halves hold decoded events, in offset order
        for half in (batch.deliveries[:middle], batch.deliveries[middle:]):
            try:
                await self.handle(Batch(half))
            except PermanentFailure as in_half:
                await self._isolate(Batch(half), in_half)

    async def ready(self) -> bool | str:
        """Joined, and not stalled: a consumer with lag that made no progress for STALL_S."""
        if not self.consuming or self.consumer is None:
            return False
        waiting = self.joining.waited(time.monotonic())
        if waiting > self.joining.grace_s:
            return f"no partitions assigned by the group for {waiting:.0f}s (joining)"
        stalled = self.stall.stalled_for()
        behind = sum((await consumer_lag(self.consumer)).values()) if stalled else 0
        CONSUMER_STALLED.labels(self.service).set(1 if stalled and behind else 0)
        if stalled and behind:
            return (f"stalled: {behind} records behind and no progress for {stalled:.0f}s"
                    + (f"; last error: {self.stall.last_error}" if self.stall.last_error else ""))
        return True

    async def close(self) -> None:
        self.consuming = False
        if self.consumer is not None:
            await self.consumer.stop()

    def owned(self) -> set[TopicPartition]:
        return set(self.consumer.assignment()) if self.consumer is not None and self.consuming else set()

    async def _decode(self, records: dict[TopicPartition, list[Record]]) -> Batch:
        """Every record decoded once; poison goes to the DLQ (before any retry of the batch)."""
        batch = Batch()
        kinds: Counter[str] = Counter()
        for tp, partition_records in records.items():
            for record in partition_records:
                event = await self._event(record)
                if event is not None:
                    kinds[event.type] += 1
                batch.deliveries.append(Delivery(tp, record.offset, record.timestamp, event, record))
        for kind, count in kinds.items():
            EVENTS_CONSUMED.labels(self.service, kind).inc(count)
        return batch

    async def _event(self, record: Record) -> EventUnion | None:
        if self._skip and record.value is not None and any(
                record.value.find(marker, 0, SKIP_LOOKS_AT) != -1 for marker in self._skip):
            return None
        try:
            event = decode_event(record.value)
            if self.accept is not None and not isinstance(event, self.accept):
                raise ValueError(f"expected {' or '.join(t.__name__ for t in self.accept)}, got {event.type}")
        except ValueError as exc:
            await self.dead_letter(record, f"undecodable: {exc}")
            return None
        return event

    async def dead_letter(self, record: DeadLetterable, reason: str) -> None:
        """To the DLQ, whole; a record the DLQ itself refuses is logged where it stays (its
        topic keeps it for the retention period) rather than stopping the consumer."""
        try:
            await retry_record_work("dead-lettering a record", lambda: send_to_dlq(
                self.runtime.producer, self.settings.topics.dlq, self.service, record, reason))
        except PermanentFailure as failure:
            log.error("could not dead-letter %s[%d]@%d (%s); skipping it: %s", record.topic, record.partition,
                      record.offset, reason[:200], failure)
