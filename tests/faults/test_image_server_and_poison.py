"""Transient image-server failures are retried and succeed; permanent ones fail once with a
reason; poison records go to the DLQ and the consumers keep going."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.support.client import Client


def _hits(client: Client) -> dict[str, int]:
    return dict(client.http.get(client.images + "/_stats").json())


def test_transient_failures_are_retried_and_succeed(fault_client: Client) -> None:
    key = uuid.uuid4().hex
    urls = [f"{fault_client.images}/flaky/{key}/2/31x41.png",     # 500, 500, then 200
            f"{fault_client.images}/reset/{key}/1/32x42.png",     # connection dropped once
            f"{fault_client.images}/slow/300/33x43.png"]          # slow but within the deadline
    body = {"count": 1, "visits": [{"store_id": "S00339218", "image_url": urls, "visit_time": "10:00"}]}
    final = fault_client.wait_final(fault_client.submit_ok(body))
    assert final["status"] == "completed", final
    hits = _hits(fault_client)
    assert hits[f"flaky:{key}"] == 3 and hits[f"reset:{key}"] == 2


def test_permanent_failures_fail_once_with_a_reason(fault_client: Client) -> None:
    tag = uuid.uuid4().hex
    base = fault_client.images
    visits = [{"store_id": "S00339218", "visit_time": "10:00", "image_url": [f"{base}/status/404?{tag}"]},
              {"store_id": "S01408764", "visit_time": "10:00", "image_url": [f"{base}/garbage.jpg?{tag}"]}]
    before = _hits(fault_client)
    final = fault_client.wait_final(fault_client.submit_ok({"count": 2, "visits": visits}))
    assert final["error"] == [{"store_id": "S00339218", "error": "HTTP 404 from the image server"},
                              {"store_id": "S01408764", "error": "not an image (unrecognised format)"}]
    after = _hits(fault_client)
    assert after["/status/404"] - before.get("/status/404", 0) == 1
    assert after["/garbage.jpg"] - before.get("/garbage.jpg", 0) == 1


POISON = (b"this is not json", json.dumps({"type": "Nope"}).encode())
CONTEXT = ("service", "reason", "topic", "partition", "offset", "timestamp", "dead_lettered_at")
Produced = dict[tuple[str, int, int], bytes]  # (topic, partition, offset) -> value


async def _poison_and_read_dlq(bootstrap: str, prefix: str) -> tuple[list[dict[str, Any]], Produced]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    produced: Produced = {}
    try:
        for topic in ("jobs", "tasks", "results"):
            for value in POISON:
                sent = await producer.send_and_wait(f"{prefix}.{topic}", value, key=b"poison")
                produced[(sent.topic, sent.partition, sent.offset)] = value
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(f"{prefix}.dlq", bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    # Dead-lettering is at least once (a consumer rebalanced between the DLQ write and storing
    # its offsets reads the record again), so records are told apart by where they came from.
    found: dict[tuple[object, ...], dict[str, Any]] = {}
    try:
        async with asyncio.timeout(30):
            while len(found) < 8:  # jobs feeds two consumers (scheduler and status): 2*2 + 2 + 2
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:
                        context = {k.removeprefix("imagejobs.dlq."): v.decode() for k, v in r.headers}
                        dead = {**context, "key": r.key, "value": r.value, "headers": list(r.headers)}
                        found[(dead["service"], dead["topic"], dead["partition"], dead["offset"])] = dead
    finally:
        await consumer.stop()
    return list(found.values()), produced


def test_poison_records_go_to_the_dlq_and_consumers_keep_going(fault_client: Client) -> None:
    stack = fault_client.stack
    dead, produced = asyncio.run(_poison_and_read_dlq(stack.infra.kafka.bootstrap, stack.prefix))
    by_service = sorted((d["service"], str(d["topic"]).rsplit(".", 1)[1]) for d in dead)
    assert by_service == sorted([("scheduler", "jobs")] * 2 + [("status", "jobs")] * 2
                                + [("processor", "tasks")] * 2 + [("status", "results")] * 2)
    assert all(str(d["reason"]).startswith("undecodable") for d in dead)
    # each dead letter is the poison record whole (key, value; it had no headers), then the
    # context headers, which name the record that was refused
    for d in dead:
        assert d["key"] == b"poison" and d["value"] == produced[(d["topic"], int(d["partition"]), int(d["offset"]))]
        assert [name for name, _ in d["headers"]] == [f"imagejobs.dlq.{n}" for n in CONTEXT], d["headers"]
    job = {"count": 1, "visits": [{"store_id": "S00339218", "image_url": [fault_client.image(7, 9)],
                                   "visit_time": "10:00"}]}
    assert fault_client.wait_final(fault_client.submit_ok(job))["status"] == "completed"
