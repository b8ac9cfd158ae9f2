"""The scheduler's producer side: events keyed by their job, and a dispatch round's records,
handed to the runtime's idempotent producer (acks=all). Each returns the acknowledgements to
wait for (ports Publisher and TaskSender, services/scheduler/ports.py)."""

from __future__ import annotations

from collections.abc import Sequence

from services.scheduler.ports import Acks, TaskRecord
from shared.events import Event, encode_event
from shared.runtime import Runtime
from shared.settings import Topics


class KafkaPublisher:
    def __init__(self, runtime: Runtime, topics: Topics) -> None:
        self.runtime, self.topics = runtime, topics

    async def to_jobs(self, events: Sequence[Event]) -> Acks:
        return await self._send(self.topics.jobs, events)

    async def to_results(self, events: Sequence[Event]) -> Acks:
        return await self._send(self.topics.results, events)

    async def _send(self, topic: str, events: Sequence[Event]) -> Acks:
        producer = self.runtime.producer
        return [await producer.send(topic, encode_event(e), key=str(e.job_id).encode()) for e in events]


class KafkaTaskSender:
    def __init__(self, runtime: Runtime, tasks_topic: str) -> None:
        self.runtime, self.topic = runtime, tasks_topic

    async def partitions(self) -> int:
        return len(await self.runtime.producer.partitions_for(self.topic))

    async def send(self, records: Sequence[TaskRecord]) -> Acks:
        producer = self.runtime.producer
        return [await producer.send(topic, value, key=key, partition=partition)
                for topic, value, key, partition in records]
