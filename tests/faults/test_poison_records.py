"""Records nobody planned for, on every core topic and through every consumer (scheduler,
processor, status, store statistics): none of them stops a service.

- Records that decode as JSON of a known type but hold what no column can store (a NUL in a
  text field, an index beyond 32 bits, a timestamp of year 1 at +14:00) fail the bounded event
  models and are dead-lettered whole by every consumer that reads them.
- Records the database refuses all the same (here: CHECK constraints added to this stack's
  database) are isolated by splitting their batch; the refused one is dead-lettered, the rest
  applied, and the job or image it belonged to still ends, with a reason.

Each time a good job submitted afterwards is visible at once and completes, and every
service stays ready (none is stalled)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.support.client import Client
from tests.support.stack import Infra, Stack
from tests.support.waiting import wait_for

YEAR_ONE = "0001-01-01T00:00:00+14:00"  # converts to year 0 in UTC
NOW = "2026-12-01T00:00:00Z"


@pytest.fixture(scope="module")
def poison_client(infra: Infra) -> Iterator[Client]:
    running = Stack(infra, env={"PROCESSOR_GPU_DELAY_MS": "0", "IMAGE_CACHE_TTL_S": "0"})
    try:
        services = running.start_all(processors=1)
        running.wait_ready(running.start_service("storestats"))
        yield Client(running, services)
    finally:
        running.stop()


def _envelope(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": str(uuid.uuid4()), "schema_version": 1, "job_id": str(uuid.uuid4()),
            "occurred_at": NOW, **fields}


def _task(**fields: Any) -> dict[str, Any]:
    job = str(uuid.uuid4())
    base = {"job_id": job, "task_id": f"{job}:0:0", "visit_index": 0, "image_index": 0, "store_id": "S00339218",
            "image_url": "http://127.0.0.1:9/x.png", "scheduled_time": NOW}
    return {**base, **fields}


def _unstorable() -> list[tuple[str, dict[str, Any], tuple[str, ...]]]:
    """What the user found retried for ever: values no column (or no timestamp) can hold, each
    with the consumers that must refuse it (the store statistics keep their own, wider columns:
    a 64-bit perimeter, a reason with its NULs dropped, a long store id are fine for them)."""
    visit = {"store_id": "S00339218", "image_urls": ["http://127.0.0.1:9/a.png"], "visit_time": "10:00"}
    jobs, results, both = ("scheduler", "status"), ("status",), ("status", "storestats")
    return [
        ("jobs", _envelope("JobSubmitted", scheduled_time=NOW, visits=[{**visit, "store_id": "S0\u00000"}]), jobs),
        ("jobs", _envelope("JobSubmitted", scheduled_time=YEAR_ONE, visits=[visit]), jobs),
        ("jobs", _envelope("JobCancelRequested", command_id=str(uuid.uuid4()), occurred_at=YEAR_ONE), jobs),
        # the scheduler passes over the JobReleased records (its own output) without decoding them
        ("jobs", _envelope("JobReleased", scheduled_time=NOW, total_images=2**40), ("status",)),
        ("tasks", _envelope("ImageTask", **_task(image_url="http://127.0.0.1:9/\u0000.png")), ("processor",)),
        ("tasks", _envelope("ImageTask", **_task(visit_index=2**40)), ("processor",)),
        ("tasks", _envelope("ImageTask", **_task(scheduled_time=YEAR_ONE)), ("processor",)),
        ("results", _envelope("ImageSucceeded", **_task(), width=1, height=1, perimeter=2**40), results),
        ("results", _envelope("ImageFailed", **_task(), reason="bad\u0000reason"), results),
        ("results", _envelope("ImageFailed", **_task(), reason="late", occurred_at=YEAR_ONE), both),
        ("results", _envelope("ImageFailed", **_task(task_id="t\u0000"), reason="x"), both),
        ("results", _envelope("ImageSucceeded", **_task(store_id="S" * 300), width=1, height=1, perimeter=4), results),
    ]


def test_unstorable_values_are_dead_lettered_by_every_consumer_and_nothing_wedges(poison_client: Client) -> None:
    stack = poison_client.stack
    records = _unstorable()
    placed = asyncio.run(_publish(stack, [(topic, body) for topic, body, _ in records]))
    expected = {(service, topic, partition, offset) for (topic, partition, offset), (_, _, refusers)
                in zip(placed, records, strict=True) for service in refusers}
    dead = wait_for(lambda: _dead_letters(stack, expected), 60, "every consumer to dead-letter every poison record")
    assert {d["reason"].split(":")[0] for d in dead.values()} == {"undecodable"}
    for service in ("scheduler", "processor", "status"):  # counted by service and (bounded) reason
        assert _dead_lettered(poison_client, service) >= sum(1 for s, *_ in expected if s == service)
    _a_good_job_is_visible_at_once_and_completes(poison_client)
    _every_service_ready(poison_client)


def test_records_the_database_refuses_are_isolated_and_their_jobs_still_end(poison_client: Client) -> None:
    """CHECK constraints make the database refuse one record per consumer inside a batch of
    good ones due at the same instant: the scheduler refuses a job (it ends `failed`, each image
    saying it could not be scheduled), the processor a result row (the image fails saying its
    result could not be recorded), the status view an outcome (folded as a failure saying so),
    the store statistics an outcome (dead-lettered, the rest counted)."""
    stack = poison_client.stack
    _refuse_in_database(stack)
    due = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    good = [_submit(poison_client, "S00339218", poison_client.image(30 + i, 40), due) for i in range(12)]
    by_scheduler = _submit(poison_client, "POISON-SCHEDULER", poison_client.image(5, 5), due)
    by_processor = _submit(poison_client, "POISON-PROCESSOR", poison_client.image(6, 6), due)
    by_status = _submit(poison_client, "S00339218", poison_client.image(111, 222), due)
    by_stats = _submit(poison_client, "POISON-STATS", poison_client.image(7, 7), due)
    for job_id in good:
        assert poison_client.wait_final(job_id, 60)["status"] == "completed"
    assert _errors(poison_client, by_scheduler)[0]["error"].startswith("job could not be scheduled: refused")
    assert _errors(poison_client, by_processor)[0]["error"].startswith("result could not be recorded: CheckViolation")
    assert _errors(poison_client, by_status)[0]["error"].startswith("outcome could not be stored: refused")
    assert poison_client.wait_final(by_stats, 60)["status"] == "failed"  # store not found, as always
    dead = wait_for(lambda: _refusals(stack), 60, "the refused records in the DLQ")
    assert {"scheduler", "status", "storestats"} <= {d["service"] for d in dead}
    _a_good_job_is_visible_at_once_and_completes(poison_client)
    _every_service_ready(poison_client)


def _refuse_in_database(stack: Stack) -> None:
    wait_for(lambda: _has_table(stack, "storestats_outcomes"), 30, "the store statistics tables")
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE scheduler_jobs ADD CONSTRAINT poison_scheduler"
                     " CHECK (event::text NOT LIKE '%POISON-SCHEDULER%')")
        conn.execute("ALTER TABLE processor_results ADD CONSTRAINT poison_processor"
                     " CHECK (store_id <> 'POISON-PROCESSOR' OR error IS DISTINCT FROM 'store not found')")
        conn.execute("ALTER TABLE status_outcomes ADD CONSTRAINT poison_status"
                     " CHECK (perimeter IS DISTINCT FROM 666)")  # 2 * (111 + 222)
        conn.execute("ALTER TABLE storestats_outcomes ADD CONSTRAINT poison_stats CHECK (store_id <> 'POISON-STATS')")


def _has_table(stack: Stack, name: str) -> bool:
    with psycopg.connect(stack.database_url) as conn:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]  # type: ignore[index,no-any-return]


def _submit(client: Client, store: str, url: str, due: str) -> str:
    return client.submit_ok({"count": 1, "scheduled_time": due,
                             "visits": [{"store_id": store, "image_url": [url], "visit_time": "10:00"}]})


def _errors(client: Client, job_id: str) -> list[dict[str, str]]:
    final = client.wait_final(job_id, 60)
    assert final["status"] == "failed", final
    return final["error"]  # type: ignore[no-any-return]


def _a_good_job_is_visible_at_once_and_completes(client: Client) -> None:
    job_id = client.submit_ok({"count": 1, "visits": [{"store_id": "S00339218", "image_url": [client.image(9, 7)],
                                                       "visit_time": "10:00"}]})
    assert client.status(job_id).status_code == 200  # read-your-writes: the fold is not wedged
    assert client.wait_final(job_id, 30)["status"] == "completed"


def _dead_lettered(client: Client, service: str) -> float:
    process = next(p for p in client.stack.processes if p.name == service)
    text = httpx.get(process.url + "/metrics", timeout=5).text
    found = re.findall(rf'^imagejobs_events_dlq_total{{reason="undecodable",service="{service}"}} (\S+)$', text, re.M)
    return float(found[0]) if found else 0.0


def _every_service_ready(client: Client) -> None:
    for service in client.stack.processes:
        if service.name != "sample_images":
            answer = httpx.get(service.url + "/readyz", timeout=5)
            assert answer.status_code == 200, (service.name, answer.text)


async def _publish(stack: Stack, records: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, int, int]]:
    producer = AIOKafkaProducer(bootstrap_servers=stack.infra.kafka.bootstrap, acks="all")
    await producer.start()
    try:
        placed = []
        for topic, body in records:
            meta = await producer.send_and_wait(f"{stack.prefix}.{topic}", json.dumps(body).encode(),
                                                key=body["job_id"].encode())
            placed.append((meta.topic, meta.partition, meta.offset))
        return placed
    finally:
        await producer.stop()


def _dead_letters(stack: Stack, wanted: set[tuple[str, str, int, int]]) -> dict[tuple[str, str, int, int], Any] | None:
    found = {k: v for k, v in _read_dlq(stack).items() if k in wanted}
    return found if set(found) == wanted else None


def _refusals(stack: Stack) -> list[dict[str, Any]] | None:
    refused = [d for d in _read_dlq(stack).values() if d["reason"].startswith("refused")]
    return refused if len({d["service"] for d in refused}) >= 3 else None


def _read_dlq(stack: Stack) -> dict[tuple[str, str, int, int], dict[str, Any]]:
    """Every dead letter by (service, topic, partition, offset): dead-lettering is at least once."""
    return asyncio.run(_dlq(stack.infra.kafka.bootstrap, f"{stack.prefix}.dlq"))


async def _dlq(bootstrap: str, topic: str) -> dict[tuple[str, str, int, int], dict[str, Any]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    out: dict[tuple[str, str, int, int], dict[str, Any]] = {}
    try:
        while batch := await consumer.getmany(timeout_ms=1500):
            for records in batch.values():
                for record in records:
                    context = {k.removeprefix("imagejobs.dlq."): v.decode() for k, v in record.headers
                               if k.startswith("imagejobs.dlq.")}
                    key = (context["service"], context["topic"], int(context["partition"]), int(context["offset"]))
                    out[key] = context
    finally:
        await consumer.stop()
    return out
