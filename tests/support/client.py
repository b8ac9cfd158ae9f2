"""A small client for the stack under test: submit, poll status, read result rows and topics."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg
from aiokafka import AIOKafkaConsumer

from shared.events import FINAL_STATUSES, decode_event
from shared.kafka import topic_partitions
from tests.support.stack import Stack
from tests.support.waiting import wait_for


class Client:
    def __init__(self, stack: Stack, services: dict[str, Any]) -> None:
        self.stack = stack
        self.ingest = services["ingest"].url
        self.status_url = services["status"].url
        self.images = services["sample_images"].url
        self.http = httpx.Client(timeout=15)

    def image(self, width: int, height: int, fmt: str = "png") -> str:
        return f"{self.images}/img/{width}x{height}.{fmt}"

    def submit(self, body: Any, **kwargs: Any) -> httpx.Response:
        return self.http.post(self.ingest + "/processJob", json=body, **kwargs)

    def submit_ok(self, body: Any) -> str:
        response = self.submit(body)
        assert response.status_code == 200, response.text
        return str(response.json()["job_id"])

    def status(self, job_id: str) -> httpx.Response:
        return self.http.get(f"{self.status_url}/api/status/{job_id}")

    def wait_final(self, job_id: str, deadline_s: float = 60) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            body = self.status(job_id).json()
            return body if body.get("status") in FINAL_STATUSES else None
        return wait_for(probe, deadline_s, f"job {job_id} to finish")

    def result_rows(self, job_id: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.stack.database_url) as conn:
            return conn.execute(
                "SELECT task_id, store_id, width, height, perimeter, error FROM processor_results"
                " WHERE job_id = %s ORDER BY visit_index, image_index", (job_id,)).fetchall()

    def topic_events(self, topic: str, job_id: str) -> list[tuple[int, Any]]:
        """(broker timestamp ms, event) of every record of `job_id` on `topic`."""
        return asyncio.run(_read_topic(self.stack.infra.kafka.bootstrap, f"{self.stack.prefix}.{topic}", job_id))

    def topic_events_matching(self, topic: str, text: str) -> list[tuple[int, Any]]:
        """(broker timestamp ms, event) of every record on `topic` whose value contains `text`."""
        return asyncio.run(_read_matching(self.stack.infra.kafka.bootstrap, f"{self.stack.prefix}.{topic}", text))

    def topic_end(self, topic: str) -> int:
        return asyncio.run(_topic_end(self.stack.infra.kafka.bootstrap, f"{self.stack.prefix}.{topic}"))


async def _read_topic(bootstrap: str, topic: str, job_id: str) -> list[tuple[int, Any]]:
    from tests.support.invariants import read_topics

    out: list[tuple[int, Any]] = []
    async for _, timestamp, value in read_topics(bootstrap, [topic]):
        event = decode_event(value)
        if str(event.job_id) == job_id:
            out.append((timestamp, event))
    return out


async def _read_matching(bootstrap: str, topic: str, text: str) -> list[tuple[int, Any]]:
    from tests.support.invariants import read_topics

    return [(timestamp, decode_event(value)) async for _, timestamp, value in read_topics(bootstrap, [topic])
            if text.encode() in value]


async def _topic_end(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(await topic_partitions(consumer, topic))
        return sum(ends.values())
    finally:
        await consumer.stop()


def example_job(client: Client, **overrides: Any) -> dict[str, Any]:
    """The example job of docs/api.md, its URLs rewritten to the local image server."""
    gallery = client.images + "/webp/gallery"
    body = {
        "count": 2,
        "visits": [
            {"store_id": "S00339218", "image_url": [f"{gallery}/2.jpg", f"{gallery}/3.jpg"],
             "visit_time": "10:00:00"},
            {"store_id": "S01408764", "image_url": [f"{gallery}/3.jpg"], "visit_time": "10:05:00"},
        ],
    }
    body.update(overrides)
    return body
