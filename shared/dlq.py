"""Dead-letter queue: records a consumer cannot decode or process, with the reason.

The consumer publishes the record here and moves on, so one poison record never blocks a
partition.
"""

from __future__ import annotations

import json
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from shared.metrics import EVENTS_DLQ

log = logging.getLogger(__name__)


async def send_to_dlq(producer: AIOKafkaProducer, dlq_topic: str, service: str,
                      record: ConsumerRecord[bytes, bytes], reason: str) -> None:
    value = record.value or b""
    payload = {
        "service": service,
        "reason": reason[:1000],
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": (record.key or b"").decode("utf-8", "replace"),
        "value": value[:100_000].decode("utf-8", "replace"),
    }
    await producer.send_and_wait(dlq_topic, json.dumps(payload).encode(), key=record.key)
    EVENTS_DLQ.labels(service, reason.split(":")[0][:40]).inc()
    log.warning("sent %s[%d]@%d to the DLQ: %s", record.topic, record.partition, record.offset, reason)
