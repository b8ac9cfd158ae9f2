"""Kafka helpers: the idempotent producer, topic creation, and consumer settings.

Producers use `acks=all` and idempotence; consumers never auto-commit: each service commits
(or stores) offsets only after its effect is durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, for_code

from shared.settings import CommonSettings

log = logging.getLogger(__name__)
# A 10,000-image job with long URLs is a few MB of JSON; ingest refuses larger events with 413.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# A dead letter is the original record whole plus its context headers (shared/dlq.py), so the
# DLQ topic, and every service's producer, allow the largest core record and room for those.
DLQ_MAX_MESSAGE_BYTES = MAX_MESSAGE_BYTES + 64 * 1024


def make_producer(settings: CommonSettings, client_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.kafka_linger_ms,
        request_timeout_ms=15000,
        max_batch_size=256 * 1024,
        max_request_size=DLQ_MAX_MESSAGE_BYTES,
        retry_backoff_ms=200,
    )


def consumer_options(settings: CommonSettings, service: str) -> dict[str, object]:
    """Manual-commit consumer settings for `service`, in the group `<prefix>.<service>`."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "group_id": settings.consumer_group(service),
        "client_id": service,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "session_timeout_ms": 10000,
        "heartbeat_interval_ms": 2000,
        "max_poll_interval_ms": 300000,
        "retry_backoff_ms": 200,
        "fetch_min_bytes": settings.kafka_fetch_min_bytes,
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
    }


# While busy, a fetch waits at the broker for this much data or `busy_batch_wait_ms`.
BUSY_FETCH_MIN_BYTES = 64 * 1024


def set_fetch_wait(consumer: AIOKafkaConsumer, min_bytes: int, max_wait_ms: int) -> None:
    """How long the consumer's next fetch requests may wait at the broker for data.

    aiokafka (0.12-0.14) builds every FetchRequest from these two attributes of its fetcher and
    offers no public setter. Without them this does nothing but say so, and
    `tests/integration/test_pacing.py` fails."""
    fetcher = getattr(consumer, "_fetcher", None)
    if not (hasattr(fetcher, "_fetch_min_bytes") and hasattr(fetcher, "_fetch_max_wait_ms")):
        log.warning("this aiokafka has no fetcher wait attributes: busy batching is off")
        return
    fetcher._fetch_min_bytes = min_bytes  # type: ignore[union-attr]
    fetcher._fetch_max_wait_ms = max_wait_ms  # type: ignore[union-attr]


def fetch_wait(consumer: AIOKafkaConsumer) -> tuple[int, int]:
    """(min_bytes, max_wait_ms) that the consumer's next fetch requests carry."""
    return consumer._fetcher._fetch_min_bytes, consumer._fetcher._fetch_max_wait_ms


def topic_specs(settings: CommonSettings) -> list[NewTopic]:
    """Every topic; with replication factor 3 or more, a write needs two in-sync replicas
    (`min.insync.replicas=2` with acks=all): one broker may die without losing an acknowledged
    record or stopping writes."""
    t, rf, n = settings.topics, settings.kafka_replication_factor, settings.kafka_partitions
    durable = durable_configs(settings)
    return [
        NewTopic(t.jobs, n, rf, topic_configs={"max.message.bytes": str(MAX_MESSAGE_BYTES), **durable}),
        NewTopic(t.tasks, settings.kafka_tasks_partitions, rf, topic_configs=durable),
        NewTopic(t.results, n, rf, topic_configs=durable),
        NewTopic(t.status, n, rf, topic_configs={"cleanup.policy": "compact", **durable}),
        NewTopic(t.dlq, 1, rf, topic_configs={"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES), **durable}),
    ]


def durable_configs(settings: CommonSettings) -> dict[str, str]:
    return {"min.insync.replicas": "2"} if settings.kafka_replication_factor >= 3 else {}


@asynccontextmanager
async def admin_client(settings: CommonSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=10000)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def existing_topics(settings: CommonSettings) -> set[str]:
    async with admin_client(settings) as admin:
        return set(await admin.list_topics())


async def ensure_topics(settings: CommonSettings, specs: list[NewTopic] | None = None) -> None:
    """Create the topics that do not exist yet (any service may do it first): the core's,
    or `specs`; and raise an existing DLQ topic's `max.message.bytes` to what it needs now."""
    wanted = specs if specs is not None else topic_specs(settings)
    async with admin_client(settings) as admin:
        existing = set(await admin.list_topics())
        missing = [spec for spec in wanted if spec.name not in existing]
        for spec in wanted:
            if spec.name == settings.topics.dlq and spec.name in existing:
                await _upgrade_dlq(admin, spec)
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another service won the race
            log.info("created topics %s", [m.name for m in missing])
        # Creation is asynchronous in the broker: wait until metadata lists every topic.
        for _ in range(100):
            if {s.name for s in wanted} <= set(await admin.list_topics()):
                return
            await asyncio.sleep(0.1)


async def _upgrade_dlq(admin: AIOKafkaAdminClient, spec: NewTopic) -> None:
    """Bring a DLQ topic created before dead letters kept records whole (with the broker's
    default, 1 MB) up to `spec`'s `max.message.bytes`; one already large enough is left alone.

    AlterConfigs (aiokafka has no IncrementalAlterConfigs) replaces every dynamic config of the
    topic, so this sets the DLQ's complete intended config: `spec.topic_configs`."""
    wanted = int(spec.topic_configs["max.message.bytes"])
    resource = ConfigResource(ConfigResourceType.TOPIC, spec.name, {"max.message.bytes": None})
    current = _config_values(await admin.describe_configs([resource])).get("max.message.bytes")
    if current is not None and int(current) >= wanted:
        return
    altered = await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, spec.name, spec.topic_configs)])
    for response in altered:
        for error_code, message, *_ in response.resources:
            if error_code:
                raise for_code(error_code)(f"setting {spec.name}'s configs {spec.topic_configs}: {message}")
    log.info("raised %s's max.message.bytes from %s to %d", spec.name, current, wanted)


def _config_values(responses: list[Any]) -> dict[str, str | None]:
    """name -> value of every config entry in DescribeConfigs responses (errors raised)."""
    out: dict[str, str | None] = {}
    for response in responses:
        for error_code, message, _type, name, entries in response.resources:
            if error_code:
                raise for_code(error_code)(f"describing {name}'s configs: {message}")
            out.update({entry[0]: entry[1] for entry in entries})
    return out
