"""Which dispatched tasks have an outcome: the scheduler reads the results topic from its end
(no consumer group, every partition), only the `task_id` header of each record (the outcome's
JSON is not decoded), and tells the dispatcher, which frees their places in its window.

Outcomes published before this watcher started belong to tasks an earlier process dispatched:
unknown to this one, they are ignored (that process's window went with it)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.kafka import kafka_security
from shared.runtime import Runtime, fetch_batch, retry_forever
from shared.settings import CommonSettings

log = logging.getLogger(__name__)
TASK_ID_HEADER = "task_id"
FETCH_MIN_BYTES, FETCH_MAX_WAIT_MS = 64 * 1024, 25


def task_id_of(record: Any) -> str | None:
    """The outcome's task id: its header (set by the processor), else read from its value."""
    for key, value in record.headers or ():
        if key == TASK_ID_HEADER:
            return bytes(value).decode(errors="replace")
    try:
        found = json.loads(record.value).get("task_id")
    except (ValueError, TypeError, AttributeError, RecursionError):
        return None
    return found if isinstance(found, str) else None


class CompletionWatcher:
    def __init__(self, settings: CommonSettings, runtime: Runtime, completed: Callable[[list[str]], None]) -> None:
        self.settings, self.runtime, self.completed = settings, runtime, completed
        self.consumer: AIOKafkaConsumer | None = None
        self.watching = asyncio.Event()  # set once positioned: from then on no outcome is missed

    async def run(self) -> None:
        await self.runtime.connected.wait()
        # A fetch answered by the first record would put one fetch request on the wire per few
        # outcomes in a burst (measured: a seventh of the scheduler's CPU); a few ms of gathering
        # costs nothing here, the window is thousands of tasks deep.
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap_servers, group_id=None,
                                         **kafka_security(self.settings),
                                         client_id="scheduler-completions", enable_auto_commit=False,
                                         isolation_level="read_committed", fetch_min_bytes=FETCH_MIN_BYTES,
                                         fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
        await retry_forever("starting the completion watcher", self.consumer.start)
        partitions = await retry_forever("finding the results partitions", self._partitions)
        self.consumer.assign(partitions)
        await retry_forever("seeking to the end of the results", lambda: self._position(partitions))
        self.watching.set()
        while True:
            batch = await fetch_batch(self.consumer, "scheduler", timeout_ms=500, max_records=10_000)
            done = [task_id for records in batch.values() for r in records if (task_id := task_id_of(r))]
            if done:
                self.completed(done)

    async def _position(self, partitions: list[TopicPartition]) -> None:
        """At the end of every partition, the position resolved (not lazily at the first fetch:
        an outcome published meanwhile would be skipped)."""
        assert self.consumer is not None
        await self.consumer.seek_to_end(*partitions)
        for tp in partitions:
            await self.consumer.position(tp)

    async def _partitions(self) -> list[TopicPartition]:
        assert self.consumer is not None
        topic = self.settings.topics.results
        await self.consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public refresh
        found = self.consumer.partitions_for_topic(topic)
        if not found:
            raise LookupError(f"{topic} has no partitions yet")
        return [TopicPartition(topic, p) for p in sorted(found)]

    async def close(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
