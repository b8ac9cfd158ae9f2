"""The DLQ keeps records whole: a 3 MB `JobSubmitted` published to the tasks topic by mistake is
dead-lettered byte for byte (key, value, headers) with context headers; `imagejobs dlq replay
--topic` puts it on the jobs topic, where it becomes a job, and `replay` alone puts it back where
it was. Old-format letters still replay, and an existing DLQ topic is raised to the size it needs."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import ConsumerRecord, RecordMetadata

from services.ingest.handlers import MAX_EVENT_BYTES
from shared.events import JobSubmitted, Visit, encode_event
from shared.kafka import (
    DLQ_MAX_MESSAGE_BYTES,
    MAX_MESSAGE_BYTES,
    admin_client,
    ensure_topics,
    read_to_end,
    topic_partitions,
)
from shared.settings import CommonSettings
from tests.support.client import Client
from tests.support.stack import Infra
from tests.support.waiting import wait_for

IMAGEJOBS = Path(sys.executable).with_name("imagejobs")  # the installed console script
HEADERS = [("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
           ("binary", bytes(range(256))), ("repeated", b"1"), ("repeated", b"2"), ("empty", b"")]
Records = list[ConsumerRecord[bytes, bytes]]


def _big_job(images: str) -> tuple[str, bytes]:
    """A JobSubmitted of about 3 MB (3,000 visits, long URLs), due in a year: it is never processed."""
    pad = "p" * 1000
    visits = tuple(Visit(store_id="S00339218", image_urls=(f"{images}/img/10x10.png?n={i}&pad={pad}",),
                         visit_time="10:00") for i in range(3000))
    event = JobSubmitted(job_id=uuid.uuid4(), scheduled_time=datetime.now(UTC) + timedelta(days=365), visits=visits)
    value = encode_event(event)
    assert 3_000_000 < len(value) < MAX_EVENT_BYTES
    return str(event.job_id), value


async def _publish(bootstrap: str, topic: str, key: bytes, value: bytes,
                   headers: list[tuple[str, bytes]]) -> RecordMetadata:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=DLQ_MAX_MESSAGE_BYTES)
    await producer.start()
    try:
        return await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def _records(bootstrap: str, topic: str) -> Records:
    """Every record now on `topic` (all partitions), in partition and offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=DLQ_MAX_MESSAGE_BYTES)
    await consumer.start()
    try:
        out = [r async for r in read_to_end(consumer, await topic_partitions(consumer, topic), poll_ms=1000)]
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


def _read(client: Client, topic: str) -> Records:
    return asyncio.run(_records(client.stack.infra.kafka.bootstrap, f"{client.stack.prefix}.{topic}"))


def _context(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {k.removeprefix("imagejobs.dlq."): v.decode() for k, v in record.headers if k.startswith("imagejobs.dlq.")}


def _imagejobs(client: Client, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": client.stack.infra.kafka.bootstrap,
           "KAFKA_TOPIC_PREFIX": client.stack.prefix}
    done = subprocess.run([str(IMAGEJOBS), *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    return done


def test_a_misrouted_3mb_job_is_dead_lettered_whole_and_replayed_to_the_jobs_topic(fault_client: Client) -> None:
    prefix, bootstrap = fault_client.stack.prefix, fault_client.stack.infra.kafka.bootstrap
    job_id, value = _big_job(fault_client.images)
    key = job_id.encode()
    sent = asyncio.run(_publish(bootstrap, f"{prefix}.tasks", key, value, HEADERS))

    def dead_letter() -> ConsumerRecord[bytes, bytes] | None:
        return next((r for r in _read(fault_client, "dlq") if _context(r).get("topic") == f"{prefix}.tasks"
                     and _context(r).get("offset") == str(sent.offset)), None)
    letter = wait_for(dead_letter, 60, "the misrouted job in the DLQ", every_s=0.5)
    assert (letter.key, letter.value) == (key, value)
    assert list(letter.headers[:len(HEADERS)]) == HEADERS  # the original headers, first and unchanged
    context = _context(letter)
    assert len(letter.headers) == len(HEADERS) + len(context) == len(HEADERS) + 7
    assert (context["service"], context["topic"], context["partition"], context["offset"], context["timestamp"]) == (
        "processor", f"{prefix}.tasks", str(sent.partition), str(sent.offset), str(sent.timestamp))
    assert context["reason"] == "undecodable: expected ImageTask, got JobSubmitted"

    shown = json.loads(_imagejobs(fault_client, "dlq", "show", str(letter.offset)).stdout)
    assert (shown["value"], shown["value_encoding"], shown["key"]) == (value.decode(), "utf-8", job_id)
    assert shown["headers"][1] == {"key": "binary", "value": base64.b64encode(bytes(range(256))).decode(),
                                   "encoding": "base64"}

    replayed = _imagejobs(fault_client, "dlq", "replay", str(letter.offset), "--topic", f"{prefix}.jobs")
    assert f"replayed to {prefix}.jobs" in replayed.stdout
    on_jobs = wait_for(lambda: [r for r in _read(fault_client, "jobs") if r.key == key], 30, "the job's record")
    assert len(on_jobs) == 1 and on_jobs[0].value == value and list(on_jobs[0].headers) == HEADERS
    body = wait_for(lambda: (r := fault_client.status(job_id)).status_code == 200 and r.json(), 30, "the job's status")
    assert body["status"] == "scheduled" and body["images"]["total"] == 3000

    _imagejobs(fault_client, "dlq", "replay", str(letter.offset))  # back where it was, byte for byte
    again = wait_for(lambda: [r for r in _read(fault_client, "tasks") if r.key == key and r.offset != sent.offset],
                     30, "the replayed record on the tasks topic")
    assert len(again) == 1 and (again[0].partition, again[0].value) == (sent.partition, value)
    assert list(again[0].headers) == HEADERS


def test_an_old_format_letter_replays_with_a_warning_when_its_value_was_cut(fault_client: Client) -> None:
    prefix, bootstrap = fault_client.stack.prefix, fault_client.stack.infra.kafka.bootstrap
    cut = f"old {uuid.uuid4().hex} ".ljust(100_000, "x")  # what the old DLQ kept of a larger value
    old = {"service": "status", "reason": "undecodable: bad", "topic": f"{prefix}.results", "partition": 0,
           "offset": 0, "key": "old-key", "value": cut}
    sent = asyncio.run(_publish(bootstrap, f"{prefix}.dlq", b"old-key", json.dumps(old).encode(), []))
    shown = json.loads(_imagejobs(fault_client, "dlq", "show", str(sent.offset)).stdout)
    assert (shown["format"], shown["topic"], shown["key"], shown["value"]) == (
        "old JSON envelope", f"{prefix}.results", "old-key", cut)
    replayed = _imagejobs(fault_client, "dlq", "replay", str(sent.offset))
    assert "old format" in replayed.stderr and "cut at 100,000 bytes" in replayed.stderr
    on_results = wait_for(lambda: [r for r in _read(fault_client, "results") if r.value == cut.encode()], 30,
                          "the old letter on the results topic")
    assert on_results[0].key == b"old-key" and on_results[0].partition == 0


async def _dlq_config(bootstrap: str, prefix: str) -> dict[str, Any]:
    settings = CommonSettings(kafka_bootstrap_servers=bootstrap, kafka_topic_prefix=prefix)
    async with admin_client(settings) as admin:  # a DLQ topic as a broker with a 1 MB default made it
        await admin.create_topics([NewTopic(f"{prefix}.dlq", 1, 1, topic_configs={"max.message.bytes": "1048588"})])
    await ensure_topics(settings)
    async with admin_client(settings) as admin:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, f"{prefix}.dlq")])
    return {entry[0]: entry[1] for entry in response.resources[0][4]}


def test_start_up_raises_an_existing_dlq_topics_size_limit(infra: Infra) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    configs = asyncio.run(_dlq_config(infra.kafka.bootstrap, prefix))
    assert configs["max.message.bytes"] == str(DLQ_MAX_MESSAGE_BYTES)
    sent = asyncio.run(_publish(infra.kafka.bootstrap, f"{prefix}.dlq", b"k", b"v" * MAX_MESSAGE_BYTES, []))
    assert sent.offset == 0
