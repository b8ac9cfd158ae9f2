"""Kafka for the status API: the end offset of the jobs topic's partition a job lives on (the
same murmur2 partitioner as the producer; read-your-writes), and publishing commands."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from shared.events import Event, encode_event
from shared.runtime import retry_forever


class EndOffsets:
    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self._topic = topic
        self._partitioner = DefaultPartitioner()
        self._bootstrap = bootstrap_servers
        self._client: AIOKafkaConsumer | None = None  # made inside the event loop, in start()

    async def start(self) -> None:
        self._client = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None,
                                        client_id="status-offsets", request_timeout_ms=5000)
        await retry_forever("starting the offsets client", self._client.start)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.stop()

    async def end_of(self, producer: AIOKafkaProducer, job_id: UUID) -> tuple[str, int, int]:
        """(topic, partition, end offset) of the partition the job's events are on."""
        parts = sorted(await producer.partitions_for(self._topic))
        tp = TopicPartition(self._topic, self._partitioner(str(job_id).encode(), parts, parts))
        if self._client is None:
            raise TimeoutError("the offsets client is not started yet")
        return tp.topic, tp.partition, (await self._client.end_offsets([tp]))[tp]


class CommandPublisher:
    """Publishes a command on the jobs topic, keyed by its job (so it follows the job's own
    events); raises TimeoutError when Kafka does not acknowledge it in time."""

    def __init__(self, runtime: Any, topic: str, timeout_s: float) -> None:
        self._runtime, self._topic, self._timeout_s = runtime, topic, timeout_s

    async def __call__(self, command: Event) -> None:
        async with asyncio.timeout(self._timeout_s):
            await self._runtime.producer.send_and_wait(self._topic, encode_event(command),
                                                       key=str(command.job_id).encode())
