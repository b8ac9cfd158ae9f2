"""Reading and replaying the dead-letter topic (for `imagejobs dlq`).

A dead letter is the original record whole (key, value, headers) followed by `imagejobs.dlq.*`
context headers (shared/dlq.py) saying which service refused it, where it was and why; replay
publishes the original key, value and headers, byte for byte, to the original topic (and
partition) or to another topic. Letters written before that format, still on existing DLQ
topics, are JSON objects (`service`, `reason`, `topic`, `partition`, `offset`, `key`, `value`,
the value cut at 100,000 bytes and decoded as UTF-8 with replacement): they are read and
replayed as before, flagged when their value may have been cut.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.dlq import HEADER_PREFIX
from shared.kafka import DLQ_MAX_MESSAGE_BYTES, read_to_end, topic_partitions

LEGACY_KEYS = ("service", "reason", "topic", "partition", "offset", "key", "value")
LEGACY_VALUE_BYTES = 100_000  # old letters kept this much of the value
Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class DeadLetter:
    """One record of the DLQ topic: the original record and its context."""

    dlq_offset: int
    service: str
    reason: str
    topic: str | None  # None: the record carries no context (not written by imagejobs)
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None
    headers: Headers = ()  # the original record's, without the context headers
    timestamp: int | None = None  # the original record's, epoch ms
    dead_lettered_at: int | None = None
    legacy: bool = False  # the old JSON envelope: key and value were kept as text

    @property
    def maybe_truncated(self) -> bool:
        """An old letter whose value was cut at 100,000 bytes or was not UTF-8 (U+FFFD)."""
        return self.legacy and self.value is not None and (
            len(self.value) == LEGACY_VALUE_BYTES or "\ufffd".encode() in self.value)


def from_record(dlq_offset: int, key: bytes | None, value: bytes | None,
                headers: Sequence[tuple[str, bytes]] | None) -> DeadLetter:
    """The dead letter in a DLQ record, in the current format or the old JSON envelope."""
    original = list(headers or ())
    cut = len(original)
    while cut and original[cut - 1][0].startswith(HEADER_PREFIX):  # the context comes last
        cut -= 1
    context = {name[len(HEADER_PREFIX):]: raw.decode("utf-8", "replace") for name, raw in original[cut:]}
    if "service" in context:
        return DeadLetter(dlq_offset, context["service"], context.get("reason", ""), context.get("topic"),
                          _int(context.get("partition")), _int(context.get("offset")), key, value,
                          tuple(original[:cut]), _int(context.get("timestamp")),
                          _int(context.get("dead_lettered_at")), legacy=False)
    old = _legacy_envelope(value)
    if old is not None:
        # The old DLQ record's own Kafka key was the original key, unmangled.
        return DeadLetter(dlq_offset, str(old["service"]), str(old["reason"]), str(old["topic"]),
                          _int(old["partition"]), _int(old["offset"]), key if key else None,
                          str(old["value"]).encode(), legacy=True)
    return DeadLetter(dlq_offset, "?", "not a dead letter: no imagejobs.dlq headers", None, None, None,
                      key, value, tuple(original))


def _legacy_envelope(value: bytes | None) -> dict[str, Any] | None:
    try:
        data = json.loads(value or b"")
    except ValueError:
        return None
    if not (isinstance(data, dict) and all(k in data for k in LEGACY_KEYS)):
        return None
    return data if isinstance(data["key"], str) and isinstance(data["value"], str) else None


def _int(text: object) -> int | None:
    try:
        return int(str(text))
    except ValueError:
        return None


def _shown(raw: bytes | None) -> tuple[str | None, str | None]:
    """(text, "utf-8") when `raw` is UTF-8, else (base64, "base64"); (None, None) for no bytes."""
    if raw is None:
        return None, None
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode(), "base64"


def summary(letter: DeadLetter) -> dict[str, Any]:
    """One row of `imagejobs dlq list`."""
    return {"dlq_offset": letter.dlq_offset, "service": letter.service, "topic": letter.topic,
            "partition": letter.partition, "offset": letter.offset,
            "bytes": None if letter.value is None else len(letter.value),
            "reason": letter.reason + (" (old format)" if letter.legacy else "")}


def describe(letter: DeadLetter) -> dict[str, Any]:
    """`imagejobs dlq show`: the context, then the key, headers and the full value, as text when
    UTF-8, else as base64 (the `*_encoding` fields say which)."""
    key, key_encoding = _shown(letter.key)
    value, value_encoding = _shown(letter.value)
    notes = []
    if value_encoding == "base64":
        notes.append("the value is not UTF-8: shown as base64")
    if letter.legacy:
        notes.append("old-format letter: key and value were kept as text"
                     + (", and the value was cut at 100,000 bytes or was not UTF-8: a replay publishes what is left"
                        if letter.maybe_truncated else ""))
    headers = [dict(zip(("key", "value", "encoding"), (name, *_shown(raw)), strict=True))
               for name, raw in letter.headers]
    return {"dlq_offset": letter.dlq_offset, "format": "old JSON envelope" if letter.legacy else "original record",
            "service": letter.service, "reason": letter.reason, "topic": letter.topic,
            "partition": letter.partition, "offset": letter.offset, "timestamp": letter.timestamp,
            "dead_lettered_at": letter.dead_lettered_at, "key": key, "key_encoding": key_encoding,
            "headers": headers, "value_bytes": None if letter.value is None else len(letter.value),
            "value_encoding": value_encoding, "value": value, "notes": notes}


async def dead_letters(bootstrap: str, topic: str, security: dict[str, Any] | None = None) -> list[DeadLetter]:
    """Every record now on the DLQ topic, by its own offset (`security`: shared.kafka.kafka_security)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=DLQ_MAX_MESSAGE_BYTES, **(security or {}))
    await consumer.start()
    try:
        partitions = await topic_partitions(consumer, topic)
        if not partitions:
            return []
        out = [from_record(r.offset, r.key, r.value, r.headers)
               async for r in read_to_end(consumer, partitions, poll_ms=1000)]
        return sorted(out, key=lambda letter: letter.dlq_offset)
    finally:
        await consumer.stop()


async def replay(bootstrap: str, letter: DeadLetter, topic: str | None = None,
                 security: dict[str, Any] | None = None) -> str:
    """Publish the dead letter's original key, value and headers (acks=all) to `topic`, or to its
    original topic and partition; returns the topic. The record gets a new timestamp (the
    original's could put it past retention at once)."""
    target = topic or letter.topic
    if not target:
        raise ValueError(f"the record at DLQ offset {letter.dlq_offset} names no original topic: give a topic")
    partition = letter.partition if target == letter.topic else None  # elsewhere: by key, as any producer
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, **(security or {}),
                                max_request_size=DLQ_MAX_MESSAGE_BYTES)
    await producer.start()
    try:
        await producer.send_and_wait(target, letter.value, key=letter.key, partition=partition,
                                     headers=list(letter.headers))
    finally:
        await producer.stop()
    return target
