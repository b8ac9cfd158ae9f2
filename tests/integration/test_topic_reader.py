"""Reading a topic to its end with aiokafka's public API alone (shared/kafka.py: topic_partitions,
read_to_end), as `imagejobs dlq list` and the tests' topic readers do: a topic created after the
consumer started is found with every partition, each record on it when the read starts is read
once and none written after, and a topic that never appears has no partitions."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.kafka import read_to_end, topic_partitions
from tests.support.stack import Infra

PARTITIONS, RECORDS = 3, 30


@dataclass
class Reading:
    topic: str
    unknown_at_first: bool
    partitions: list[TopicPartition]
    read: list[bytes]
    missing: list[TopicPartition]


async def read_a_topic_made_after_the_reader_started(bootstrap: str) -> Reading:
    topic = f"reader-{uuid.uuid4().hex[:8]}"
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await admin.start()
    await producer.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        unknown_at_first = consumer.partitions_for_topic(topic) is None
        for i in range(RECORDS):
            await producer.send_and_wait(topic, str(i).encode(), partition=i % PARTITIONS)
        partitions = await topic_partitions(consumer, topic, wait_s=10)
        read: list[bytes] = []
        async for record in read_to_end(consumer, partitions):
            if not read:  # written once the read began: past the ends it reads to
                await producer.send_and_wait(topic, b"late", partition=record.partition)
            read.append(record.value)
        missing = await topic_partitions(consumer, f"{topic}-never-made", wait_s=0.5)
        return Reading(topic, unknown_at_first, partitions, read, missing)
    finally:
        await producer.stop()
        await admin.close()
        await consumer.stop()


def test_a_topic_is_read_to_its_end_by_public_api(infra: Infra) -> None:
    got = asyncio.run(read_a_topic_made_after_the_reader_started(infra.kafka.bootstrap))
    assert got.unknown_at_first, "the topic must be new to the consumer for this test to mean anything"
    assert got.partitions == [TopicPartition(got.topic, p) for p in range(PARTITIONS)]
    assert b"late" not in got.read
    assert sorted(got.read, key=int) == [str(i).encode() for i in range(RECORDS)]
    assert got.missing == []
