"""The promises every fault scenario must keep, checked from what users and the topics see:
every job final, exactly one result row per image, nothing released before its time, and
the status view equal to the production fold replayed from the topics alone (on a scratch
database, in other batches)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from aiokafka import AIOKafkaConsumer

from shared.events import decode_event
from shared.kafka import read_to_end, topic_partitions
from tests.support.client import Client
from tests.support.fold import ScratchView


@dataclass
class Batch:
    """Jobs submitted for a scenario: job_id -> expected task ids and scheduled time."""

    tasks: dict[str, set[str]] = field(default_factory=dict)
    scheduled: dict[str, datetime] = field(default_factory=dict)

    @property
    def images(self) -> int:
        return sum(len(t) for t in self.tasks.values())


def submit_batch(client: Client, rng: random.Random, jobs: int = 30, max_images: int = 12,
                 ahead_s: float = 3.0, bad_every: int = 7) -> Batch:
    """`jobs` jobs of 1..max_images images; a third scheduled up to `ahead_s` ahead; every
    `bad_every`-th job has one failing image (unknown store or 404)."""
    batch = Batch()
    for j in range(jobs):
        n = rng.randint(1, max_images)
        urls = [client.image(rng.randint(10, 400), rng.randint(10, 400), rng.choice(["png", "jpg"])) for _ in range(n)]
        visits = [{"store_id": "S00339218", "image_url": urls, "visit_time": "10:00"}]
        if j % bad_every == 0:
            visits.append({"store_id": "S01408764" if j % 2 else "NOPE", "visit_time": "10:00",
                           "image_url": [client.images + "/status/404"]})
        body: dict[str, Any] = {"count": len(visits), "visits": visits}
        if j % 3 == 0:
            body["scheduled_time"] = (datetime.now(UTC) + timedelta(seconds=rng.uniform(0.5, ahead_s))).isoformat()
        response = client.submit(body)
        assert response.status_code == 200, response.text
        job_id = response.json()["job_id"]
        batch.scheduled[job_id] = datetime.fromisoformat(response.json()["scheduled_time"].replace("Z", "+00:00"))
        batch.tasks[job_id] = {f"{job_id}:{v}:{i}" for v, visit in enumerate(visits)
                               for i in range(len(visit["image_url"]))}
    return batch


def assert_promises_kept(client: Client, batch: Batch, deadline_s: float = 120) -> dict[str, int]:
    """All four promises; returns counts for the report."""
    finals = {job_id: client.wait_final(job_id, deadline_s) for job_id in batch.tasks}
    with psycopg.connect(client.stack.database_url) as conn:
        rows = conn.execute("SELECT task_id, job_id FROM processor_results WHERE job_id = ANY(%s)",
                            ([UUID(j) for j in batch.tasks],)).fetchall()
    recorded = [r[0] for r in rows]
    assert len(recorded) == len(set(recorded)), "a task has two result rows"
    assert set(recorded) == set().union(*batch.tasks.values()), "missing or unexpected result rows"
    events = read_all(client, ["jobs", "results", "tasks"])
    for ts, event in events["tasks"]:
        job = str(event.job_id)
        if job in batch.scheduled:
            assert ts >= batch.scheduled[job].timestamp() * 1000 - 1, f"task of {job} emitted early"
    for _, event in events["jobs"]:
        if event.type == "JobReleased" and str(event.job_id) in batch.scheduled:
            assert event.occurred_at >= batch.scheduled[str(event.job_id)], "released early"
    replayed = _replay(client, [e for _, e in events["jobs"] + events["results"] if str(e.job_id) in batch.tasks])
    for job_id, final in finals.items():
        status, _, succeeded, failed, errors = replayed[UUID(job_id)]
        assert final["status"] == status, (job_id, final, status)
        assert (final["images"]["succeeded"], final["images"]["failed"]) == (succeeded, failed)
        assert final.get("error", []) == errors
    report = {"jobs": len(finals), "images": len(recorded),
              "duplicates": len(recorded) - len(set(recorded)),
              "lost": len(set().union(*batch.tasks.values()) - set(recorded))}
    print(f"\npromises kept: {report}")  # shown with `pytest -s`: the figures for reports
    return report


def _replay(client: Client, events: list[Any]) -> dict[UUID, Any]:
    """The production fold of `events`, replayed on a scratch database in small batches."""
    scratch = ScratchView(client.stack.database_url)
    try:
        scratch.fold(events, batch_size=97)
        return scratch.summaries()
    finally:
        scratch.drop()


def read_all(client: Client, topics: list[str]) -> dict[str, list[tuple[int, Any]]]:
    return asyncio.run(_read_all(client.stack.infra.kafka.bootstrap, client.stack.prefix, topics))


async def _read_all(bootstrap: str, prefix: str, topics: list[str]) -> dict[str, list[tuple[int, Any]]]:
    out: dict[str, list[tuple[int, Any]]] = {t: [] for t in topics}
    async for topic, timestamp, value in read_topics(bootstrap, [f"{prefix}.{t}" for t in topics]):
        try:
            event = decode_event(value)
        except ValueError:
            continue  # a poison record injected by a test: the DLQ's business
        out[topic.rsplit(".", 1)[1]].append((timestamp, event))
    return out


async def read_topics(bootstrap: str, topics: list[str],
                      security: dict[str, Any] | None = None) -> AsyncIterator[tuple[str, int, bytes]]:
    """Every record now on `topics` (all partitions, explicitly assigned), then stop.
    `security`: aiokafka's SASL arguments, for a secured cluster."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                **(security or {}))
    await consumer.start()
    try:
        parts = [tp for topic in topics for tp in await topic_partitions(consumer, topic)]
        async for record in read_to_end(consumer, parts):
            yield record.topic, record.timestamp, record.value
    finally:
        await consumer.stop()
