"""Reading what the store statistics service published, and the exact recount from the topics."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from services.storestats.domain import CountedImage, WindowStats, parse_outcome, recount
from shared.events import iso
from shared.kafka import topic_partitions
from tests.support.invariants import read_topics
from tests.support.stack import Stack

WINDOW_S = 60


def exact_recount(stack: Stack) -> dict[tuple[str, str], dict[str, Any]]:
    """(store_id, window_start) -> the published fields, folded from `<prefix>.results` read from
    the beginning with a plain consumer (each task once, at its first outcome)."""
    outcomes: list[CountedImage] = []
    for _, _, value in _records(stack, f"{stack.prefix}.results"):
        outcome = parse_outcome(value)
        if outcome is not None:
            outcomes.append(outcome)
    windows = recount(outcomes, WINDOW_S).values()
    return {(s.store_id, iso(datetime.fromtimestamp(s.window_start, UTC))): _fields(s) for s in windows}


def published(stack: Stack) -> tuple[dict[tuple[str, str], dict[str, Any]], int]:
    """The latest record per (store, window) on `<prefix>.store-stats`, and how many records."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    records = _records(stack, f"{stack.prefix}.store-stats")
    for _, _, value in records:
        body = json.loads(value)
        latest[(body["store_id"], body["window_start"])] = {k: body[k] for k in FIELDS}
    return latest, len(records)


FIELDS = ("images", "succeeded", "failed", "failed_by_reason", "perimeter_sum")


def _fields(stats: WindowStats) -> dict[str, Any]:
    return {"images": stats.images, "succeeded": stats.succeeded, "failed": sum(stats.failed.values()),
            "failed_by_reason": dict(sorted(stats.failed.items())), "perimeter_sum": stats.perimeter_sum}


def _records(stack: Stack, topic: str) -> list[tuple[str, int, bytes]]:
    async def read() -> list[tuple[str, int, bytes]]:
        return [r async for r in read_topics(stack.infra.kafka.bootstrap, [topic])]
    return asyncio.run(read())


def group_lag(stack: Stack, group: str, topics: list[str]) -> int:
    """Records on `topics` past the group's committed offsets (all partitions)."""
    return asyncio.run(_group_lag(stack.infra.kafka.bootstrap, group, topics))


async def _group_lag(bootstrap: str, group: str, topics: list[str]) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        parts = [tp for topic in topics for tp in await topic_partitions(consumer, topic)]
        ends = await consumer.end_offsets(parts)
        return sum(end - (committed[tp].offset if tp in committed else 0) for tp, end in ends.items())
    finally:
        await consumer.stop()
        await admin.close()
