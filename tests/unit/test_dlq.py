"""Dead letters (shared/dlq.py, imagejobs_client/dlq_tools.py): the record whole plus context headers, a
bounded metric label, and letters of the old JSON format still readable."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import REGISTRY

from imagejobs_client.dlq_tools import LEGACY_VALUE_BYTES, describe, from_record, summary
from shared.dlq import REASON_CATEGORIES, reason_category, send_to_dlq
from shared.kafka import DLQ_MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES, topic_specs
from shared.settings import CommonSettings


@dataclass
class Record:
    """Not an aiokafka type: send_to_dlq needs only these attributes."""

    topic: str = "imagejobs.tasks"
    partition: int = 7
    offset: int = 4242
    timestamp: int | None = 1_700_000_000_123
    key: bytes | None = b"\xff\x00key"
    value: bytes | None = b"\x89PNG\r\n\x1a\n\x00\xff" * 1000
    headers: Any = (("traceparent", b"00-abc-01"), ("bin", b"\x00\xfe"))


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                            **kwargs: Any) -> None:
        self.sent.append((topic, key, value, kwargs["headers"]))


@pytest.mark.parametrize(("reason", "category"), [
    ("undecodable: expected ImageTask, got JobSubmitted", "undecodable"),
    ("undecodable: 1 validation error for tagged-union[...]: input_value='x' ...", "undecodable"),
    ("unexpected type: Nope", "unexpected type"),
    ("Refused by database: value too long for type character varying(64)", "refused by database"),
    ("refused: a bug", "refused"),
    ("processing error: ZeroDivisionError", "processing error"),
    ("something else entirely, with details 12345", "other"),
    ("undecodable", "undecodable"),
    ("", "other"),
])
def test_the_metric_label_is_a_category_from_a_fixed_set(reason: str, category: str) -> None:
    assert reason_category(reason) == category
    assert reason_category(reason) in (*REASON_CATEGORIES, "other")


async def test_a_dead_letter_is_the_record_whole_with_context_headers_after_its_own() -> None:
    producer, record = FakeProducer(), Record()
    reason = "undecodable: " + "é" * 2000
    before = REGISTRY.get_sample_value("imagejobs_events_dlq_total", {"service": "unit", "reason": "undecodable"})
    await send_to_dlq(producer, "imagejobs.dlq", "unit", record, reason)
    [(topic, key, value, headers)] = producer.sent
    assert (topic, key, value) == ("imagejobs.dlq", record.key, record.value)
    assert headers[:2] == list(record.headers)
    context = dict(headers[2:])
    assert [name for name, _ in headers[2:]] == [f"imagejobs.dlq.{n}" for n in (
        "service", "reason", "topic", "partition", "offset", "timestamp", "dead_lettered_at")]
    assert context["imagejobs.dlq.service"] == b"unit"
    assert context["imagejobs.dlq.reason"].decode() == reason[:1000]
    assert (context["imagejobs.dlq.topic"], context["imagejobs.dlq.partition"], context["imagejobs.dlq.offset"],
            context["imagejobs.dlq.timestamp"]) == (b"imagejobs.tasks", b"7", b"4242", b"1700000000123")
    assert int(context["imagejobs.dlq.dead_lettered_at"]) > 1_700_000_000_123
    after = REGISTRY.get_sample_value("imagejobs_events_dlq_total", {"service": "unit", "reason": "undecodable"})
    assert after == (before or 0) + 1

    letter = from_record(12, key, value, headers)
    assert (letter.key, letter.value, letter.headers) == (record.key, record.value, record.headers)
    assert (letter.service, letter.topic, letter.partition, letter.offset, letter.timestamp) == (
        "unit", "imagejobs.tasks", 7, 4242, 1_700_000_000_123)
    assert not letter.legacy and not letter.maybe_truncated
    shown = describe(letter)
    assert shown["value_encoding"] == "base64" and base64.b64decode(shown["value"]) == record.value
    assert shown["key_encoding"] == "base64" and shown["headers"][0] == {
        "key": "traceparent", "value": "00-abc-01", "encoding": "utf-8"}
    assert "the value is not UTF-8: shown as base64" in shown["notes"]


async def test_a_record_without_headers_key_or_timestamp() -> None:
    producer = FakeProducer()
    await send_to_dlq(producer, "d", "status", Record(key=None, value=b"{}", headers=None, timestamp=None), "why")
    [(_, key, value, headers)] = producer.sent
    assert key is None and value == b"{}" and len(headers) == 7
    letter = from_record(0, key, value, headers)
    assert letter.headers == () and letter.timestamp == -1 and letter.reason == "why"
    assert describe(letter)["value"] == "{}" and describe(letter)["value_encoding"] == "utf-8"


def _old_letter(value: str, key: str = "job-1") -> bytes:
    return json.dumps({"service": "processor", "reason": "undecodable: bad", "topic": "imagejobs.tasks",
                       "partition": 3, "offset": 99, "key": key, "value": value}).encode()


def test_an_old_format_letter_is_read_and_replayable() -> None:
    letter = from_record(5, b"job-1", _old_letter('{"type": "Nope"}'), [])
    assert letter.legacy and not letter.maybe_truncated
    assert (letter.service, letter.reason, letter.topic, letter.partition, letter.offset) == (
        "processor", "undecodable: bad", "imagejobs.tasks", 3, 99)
    assert (letter.key, letter.value, letter.headers) == (b"job-1", b'{"type": "Nope"}', ())
    assert summary(letter)["reason"] == "undecodable: bad (old format)"
    assert describe(letter)["value"] == '{"type": "Nope"}' and describe(letter)["format"] == "old JSON envelope"


@pytest.mark.parametrize("value", ["x" * LEGACY_VALUE_BYTES, "é" * (LEGACY_VALUE_BYTES // 2), "ok\ufffdbroken"])
def test_an_old_letter_whose_value_was_cut_is_flagged(value: str) -> None:
    letter = from_record(6, None, _old_letter(value), None)
    assert letter.maybe_truncated and letter.key is None
    assert any("cut at 100,000 bytes" in note for note in describe(letter)["notes"])


def test_a_record_that_is_no_dead_letter_is_listed_without_an_origin() -> None:
    letter = from_record(7, b"k", b"hello", [("h", b"v")])
    assert (letter.service, letter.topic, letter.value, letter.headers) == ("?", None, b"hello", (("h", b"v"),))


def test_the_dlq_topic_takes_the_largest_core_record_and_its_context() -> None:
    specs = {spec.name: spec for spec in topic_specs(CommonSettings(kafka_topic_prefix="p"))}
    thirty_days_ms = str(30 * 86_400_000)
    assert specs["p.dlq"].topic_configs == {"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES),
                                            "retention.ms": thirty_days_ms}
    assert DLQ_MAX_MESSAGE_BYTES == MAX_MESSAGE_BYTES + 64 * 1024
    assert "max.message.bytes" not in specs["p.tasks"].topic_configs
    replicated = {s.name: s for s in topic_specs(CommonSettings(kafka_topic_prefix="p", kafka_replication_factor=3))}
    assert replicated["p.dlq"].topic_configs == {"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES),
                                                 "min.insync.replicas": "2", "retention.ms": thirty_days_ms}
