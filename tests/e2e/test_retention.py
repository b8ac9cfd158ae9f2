"""Retention through the real stack (JOB_RETENTION_S=3, no slack): a finished job is forgotten,
by the API (404) and by every table that held it, and the compacted status topic gets its
tombstone; a pending job submitted before it is kept; its Idempotency-Key makes a new job once
forgotten. And the topics' retention configs, on new and on existing topics."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.kafka import TOMBSTONE_RETENTION_MS, admin_client, ensure_topics, read_to_end, topic_partitions
from shared.settings import CommonSettings
from tests.support.client import Client, example_job
from tests.support.stack import Infra, Stack
from tests.support.waiting import wait_for

RETENTION_S = 3
# table -> the column naming the job
TABLES = {"status_jobs": "job_id", "status_outcomes": "job_id", "processor_results": "job_id",
          "scheduler_jobs": "job_id", "ingest_idempotency_keys": "job_id"}


@pytest.fixture(scope="module")
def retained(infra: Infra) -> Iterator[Client]:
    env = {"JOB_RETENTION_S": str(RETENTION_S), "RETENTION_EVERY_S": "0.5", "RETENTION_SLACK_S": "0"}
    running = Stack(infra, env=env)
    try:
        yield Client(running, running.start_all(processors=1))
    finally:
        running.stop()


def rows_of(client: Client, job_id: str) -> dict[str, int]:
    """How many rows each table holds of the job."""
    with psycopg.connect(client.stack.database_url) as conn:
        return {table: conn.execute(f"SELECT count(*) FROM {table} WHERE {column} = %s",  # noqa: S608
                                    (job_id,)).fetchone()[0]  # type: ignore[index]
                for table, column in TABLES.items()}


def status_records(client: Client, job_id: str) -> list[bytes | None]:
    """The values of every record of the job on the status topic (None: a tombstone)."""
    return asyncio.run(_records(client.stack.infra.kafka.bootstrap, f"{client.stack.prefix}.status", job_id.encode()))


async def _records(bootstrap: str, topic: str, key: bytes) -> list[bytes | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = await topic_partitions(consumer, topic)
        return [r.value async for r in read_to_end(consumer, parts) if r.key == key]
    finally:
        await consumer.stop()


def test_a_finished_job_is_forgotten_a_pending_one_kept_and_its_key_makes_a_new_job(retained: Client) -> None:
    client = retained
    far = (datetime.now(UTC) + timedelta(days=300)).isoformat()
    pending = client.submit_ok(example_job(client, scheduled_time=far))
    body = example_job(client)
    key = {"Idempotency-Key": f"retention-{uuid.uuid4()}"}
    first = client.submit(body, headers=key)
    assert first.status_code == 200, first.text
    job_id = first.json()["job_id"]
    assert client.wait_final(job_id)["status"] == "completed"
    assert all(rows_of(client, job_id).values())  # every table held it

    gone = wait_for(lambda: (r := client.status(job_id)).status_code == 404 and r, 30, "the finished job to expire")
    assert gone.json() == {"error": "job not found"}
    wait_for(lambda: not any(rows_of(client, job_id).values()), 30,
             f"every row of the job to go (now {rows_of(client, job_id)})")
    started = time.monotonic()  # the read-your-writes wait finds the fold past the job: no wait
    assert client.status(job_id).status_code == 404
    assert time.monotonic() - started < 1.0
    assert client.http.get(f"{client.status_url}/api/jobs/{job_id}/results").status_code == 404
    records = wait_for(lambda: (r := status_records(client, job_id)) and r[-1] is None and r, 30,
                       "the job's tombstone on the status topic")
    assert records[0] is not None  # its statuses came first, then the tombstone

    kept = client.status(pending)
    assert kept.status_code == 200 and kept.json()["status"] == "scheduled"
    assert rows_of(client, pending)["status_jobs"] == rows_of(client, pending)["scheduler_jobs"] == 1
    assert None not in status_records(client, pending)

    again = client.submit(body, headers=key)  # the key was forgotten with the job: a new job
    assert again.status_code == 200, again.text
    assert again.json()["job_id"] != job_id
    assert client.wait_final(again.json()["job_id"])["status"] == "completed"


def test_a_cancelled_job_is_forgotten_too(retained: Client) -> None:
    far = (datetime.now(UTC) + timedelta(days=300)).isoformat()
    job_id = retained.submit_ok(example_job(retained, scheduled_time=far))
    cancelled = retained.http.delete(f"{retained.status_url}/api/jobs/{job_id}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    wait_for(lambda: retained.status(job_id).status_code == 404, 30, "the cancelled job to expire")
    wait_for(lambda: not any(rows_of(retained, job_id).values()), 30, "the cancelled job's rows to go")


def test_the_retention_metric_counts_what_each_service_deleted(retained: Client) -> None:
    job_id = retained.submit_ok(example_job(retained))
    retained.wait_final(job_id)
    wait_for(lambda: retained.status(job_id).status_code == 404, 30, "the job to expire")
    metrics = retained.http.get(f"{retained.status_url}/metrics").text
    assert 'imagejobs_retention_deleted_total{table="status_jobs"}' in metrics
    assert 'imagejobs_retention_deleted_total{table="status_outcomes"}' in metrics


def test_topics_get_their_retention_configs_also_when_they_exist_already(infra: Infra) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = CommonSettings(kafka_bootstrap_servers=infra.kafka.bootstrap, kafka_topic_prefix=prefix,
                              dlq_retention_s=2 * 86_400, kafka_topic_retention_s=3 * 86_400)

    async def configs() -> dict[str, dict[str, str]]:
        async with admin_client(settings) as admin:  # a DLQ as an earlier version made it
            await admin.create_topics([NewTopic(f"{prefix}.dlq", 1, 1, topic_configs={})])
        await ensure_topics(settings)
        out = {}
        async with admin_client(settings) as admin:
            for topic in ("dlq", "jobs", "status"):
                [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC,
                                                                          f"{prefix}.{topic}")])
                out[topic] = {entry[0]: entry[1] for entry in response.resources[0][4]}
        return out
    found = asyncio.run(configs())
    assert found["dlq"]["retention.ms"] == str(2 * 86_400_000)
    assert int(found["dlq"]["max.message.bytes"]) > 8 * 1024 * 1024
    assert found["jobs"]["retention.ms"] == str(3 * 86_400_000)
    assert found["status"]["cleanup.policy"] == "compact"
    assert found["status"]["delete.retention.ms"] == str(TOMBSTONE_RETENTION_MS)
