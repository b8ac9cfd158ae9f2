"""Kafka for the status API: the end offset of the jobs topic's partition a job lives on (the
same murmur2 partitioner as the producer; read-your-writes), and publishing commands."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from shared.admissions import withdraw
from shared.events import CommandEvent, encode_event
from shared.publishing import NotAccepted, NotAcknowledged, publish_within, withdraw_unless_admitted
from shared.runtime import retry_forever


class EndOffsets:
    def __init__(self, bootstrap_servers: str, topic: str, security: dict[str, Any] | None = None) -> None:
        self._topic = topic
        self._security = security or {}  # shared.kafka.kafka_security
        self._partitioner = DefaultPartitioner()
        self._bootstrap = bootstrap_servers
        self._client: AIOKafkaConsumer | None = None  # made inside the event loop, in start()

    async def start(self) -> None:
        self._client = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None, **self._security,
                                        client_id="status-offsets", request_timeout_ms=5000)
        await retry_forever("starting the offsets client", self._client.start)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.stop()

    async def ends_of(self, producer: AIOKafkaProducer, job_ids: list[UUID]) -> dict[UUID, tuple[str, int, int]]:
        """(topic, partition, end offset) of the partition each job's events are on, in one
        offsets request."""
        parts = sorted(await producer.partitions_for(self._topic))
        where = {job_id: TopicPartition(self._topic, self._partitioner(str(job_id).encode(), parts, parts))
                 for job_id in job_ids}
        if self._client is None:
            raise TimeoutError("the offsets client is not started yet")
        ends = await self._client.end_offsets(list(set(where.values())))
        return {job_id: (tp.topic, tp.partition, ends[tp]) for job_id, tp in where.items()}


class CommandPublisher:
    """Publishes a command on the jobs topic, keyed by its job (so it follows the job's own
    events). Raises NotAccepted when it certainly will not be decided: not taken by the
    producer, or not acknowledged in time and then withdrawn before the scheduler admitted it
    (shared/admissions.py), so "503: nothing was changed" is true."""

    def __init__(self, runtime: Any, topic: str, timeout_s: float) -> None:
        self._runtime, self._topic, self._timeout_s = runtime, topic, timeout_s

    async def __call__(self, command: CommandEvent) -> None:
        try:
            await publish_within(self._runtime.producer, self._topic, encode_event(command),
                                 str(command.job_id).encode(), self._timeout_s)
        except NotAcknowledged as late:
            if await withdraw_unless_admitted(lambda: withdraw(self._runtime.pool, command.command_id), late.ack,
                                              f"command {command.command_id}"):
                raise NotAccepted("not acknowledged in time; withdrawn") from None
