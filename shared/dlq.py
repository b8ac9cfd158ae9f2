"""Dead-letter queue: records a consumer cannot decode or process, kept whole, with the reason.

The consumer publishes the record here and moves on, so one poison record never blocks a
partition. A dead letter is the original record byte for byte (key, value, headers) followed
by context headers in the style of Kafka Connect's dead letter queue (`imagejobs.dlq.service`,
`.reason`, `.topic`, `.partition`, `.offset`, `.timestamp`, `.dead_lettered_at`; UTF-8 text,
times in epoch milliseconds), so `imagejobs dlq replay` can publish exactly what was refused.
The DLQ topic accepts the largest record a core topic does (shared/kafka.py `DLQ_MAX_MESSAGE_BYTES`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from shared.metrics import EVENTS_DLQ

log = logging.getLogger(__name__)
HEADER_PREFIX = "imagejobs.dlq."
CONTEXT = ("service", "reason", "topic", "partition", "offset", "timestamp", "dead_lettered_at")
REASON_CHARS = 1000
# The `reason` label of imagejobs_events_dlq_total: the reason's prefix before its first ":"
# when it is one of these, else "other" (the full reason is in the header and the log line).
REASON_CATEGORIES = ("undecodable", "unexpected type", "refused", "refused by database", "processing error")


class DeadLetterable(Protocol):
    """What a dead-lettered record must offer (aiokafka's ConsumerRecord does; so can an adapter):
    read-only attributes, `timestamp` in epoch ms."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int | None: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]] | None: ...


class Producer(Protocol):
    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                            **kwargs: Any) -> Any: ...


def reason_category(reason: str) -> str:
    """A bounded metric label for `reason`: its known prefix (before the first ":"), else "other"."""
    prefix = reason.split(":", 1)[0].strip().lower()
    return prefix if prefix in REASON_CATEGORIES else "other"


def context_headers(service: str, record: DeadLetterable, reason: str,
                    now_ms: int | None = None) -> list[tuple[str, bytes]]:
    """The `imagejobs.dlq.*` headers that say who refused `record`, where it was and why."""
    timestamp = -1 if record.timestamp is None else int(record.timestamp)  # -1: Kafka's "no timestamp"
    values = (service, reason[:REASON_CHARS], record.topic, record.partition, record.offset, timestamp,
              int(time.time() * 1000) if now_ms is None else now_ms)
    return [(HEADER_PREFIX + name, str(value).encode()) for name, value in zip(CONTEXT, values, strict=True)]


async def send_to_dlq(producer: Producer, dlq_topic: str, service: str, record: DeadLetterable,
                      reason: str) -> None:
    """Publish `record` whole to `dlq_topic`: its key, value and headers, then the context headers."""
    headers = [*(record.headers or ()), *context_headers(service, record, reason)]
    await producer.send_and_wait(dlq_topic, record.value, key=record.key, headers=headers)
    EVENTS_DLQ.labels(service, reason_category(reason)).inc()
    log.warning("sent %s[%d]@%d to the DLQ: %s", record.topic, record.partition, record.offset, reason)
