"""Reading and replaying the dead-letter topic (for `imagejobs dlq`): each DLQ record says which
service could not handle which record (topic, partition, offset, key, value) and why; replay
publishes the original key and value to the original topic again (consumers are idempotent)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


async def dead_letters(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every record now on the DLQ topic, with its own offset as `dlq_offset`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
        if not partitions:
            return []
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        out: list[dict[str, Any]] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                out += [{"dlq_offset": r.offset, **json.loads(r.value)} for r in records]
        return sorted(out, key=lambda r: r["dlq_offset"])
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(20):
        found = consumer.partitions_for_topic(topic)
        if found:
            return set(found)
        await consumer._client.force_metadata_update()  # noqa: SLF001
        await asyncio.sleep(0.1)
    return set()


async def replay(bootstrap: str, letter: dict[str, Any]) -> None:
    """Publish the dead letter's original key and value to its original topic (acks=all)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        key = letter["key"].encode() if letter.get("key") else None
        await producer.send_and_wait(letter["topic"], letter["value"].encode(), key=key)
    finally:
        await producer.stop()
