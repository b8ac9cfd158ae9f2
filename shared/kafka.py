"""Kafka helpers: how clients authenticate, the idempotent producer, topic creation, and
consumer settings.

Producers use `acks=all` and idempotence; consumers never auto-commit: each service commits
(or stores) offsets only after its effect is durable. Every aiokafka client of every service is
made with `kafka_security(settings)`, so KAFKA_SECURITY_PROTOCOL and KAFKA_SASL_* reach them all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, for_code
from aiokafka.helpers import create_ssl_context

from shared.settings import CommonSettings

log = logging.getLogger(__name__)
# A 10,000-image job with long URLs is a few MB of JSON; ingest refuses larger events with 413.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# A dead letter is the original record whole plus its context headers (shared/dlq.py), so the
# DLQ topic, and every service's producer, allow the largest core record and room for those.
DLQ_MAX_MESSAGE_BYTES = MAX_MESSAGE_BYTES + 64 * 1024
# On the compacted status topic a tombstone (an expired job: shared/retention.py) lets compaction
# drop the job's records, and is itself dropped this long after: consumers that read within a
# day see it, and the topic keeps nothing of the job after that.
TOMBSTONE_RETENTION_MS = 86_400_000


SECURITY_PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


def kafka_security(settings: CommonSettings) -> dict[str, Any]:
    """The connection keyword arguments of every aiokafka client (producer, consumer, admin,
    AIOKafkaClient) for KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_CAFILE.

    A ValueError names what is wrong (an unknown protocol or mechanism, SASL without a username
    or password), never the password: services call this while they are built, so a bad
    setting stops them at start with one line."""
    protocol = settings.kafka_security_protocol.strip().upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise ValueError(f"KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol!r} is not one of "
                         + ", ".join(SECURITY_PROTOCOLS))
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        mechanism = settings.kafka_sasl_mechanism.strip().upper()
        if mechanism not in SASL_MECHANISMS:
            raise ValueError(f"KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism!r} is not one of "
                             + ", ".join(SASL_MECHANISMS))
        password = settings.kafka_sasl_password.get_secret_value()
        missing = [name for name, value in (("KAFKA_SASL_USERNAME", settings.kafka_sasl_username),
                                            ("KAFKA_SASL_PASSWORD", password)) if not value]
        if missing:
            raise ValueError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs {' and '.join(missing)}")
        options |= {"sasl_mechanism": mechanism, "sasl_plain_username": settings.kafka_sasl_username,
                    "sasl_plain_password": password}
    if protocol.endswith("SSL"):
        options["ssl_context"] = create_ssl_context(cafile=settings.kafka_ssl_cafile or None)
    return options


def make_producer(settings: CommonSettings, client_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        **kafka_security(settings),
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.kafka_linger_ms,
        request_timeout_ms=15000,
        max_batch_size=256 * 1024,
        max_request_size=DLQ_MAX_MESSAGE_BYTES,
        retry_backoff_ms=200,
    )


def consumer_options(settings: CommonSettings, service: str) -> dict[str, Any]:
    """Manual-commit consumer settings for `service`, in the group `<prefix>.<service>`."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        **kafka_security(settings),
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
    if fetcher is None or not (hasattr(fetcher, "_fetch_min_bytes") and hasattr(fetcher, "_fetch_max_wait_ms")):
        log.warning("this aiokafka has no fetcher wait attributes: busy batching is off")
        return
    fetcher._fetch_min_bytes = min_bytes
    fetcher._fetch_max_wait_ms = max_wait_ms


def fetch_wait(consumer: AIOKafkaConsumer) -> tuple[int, int]:
    """(min_bytes, max_wait_ms) that the consumer's next fetch requests carry."""
    return consumer._fetcher._fetch_min_bytes, consumer._fetcher._fetch_max_wait_ms


def topic_specs(settings: CommonSettings) -> list[NewTopic]:
    """Every topic; with replication factor 3 or more, a write needs two in-sync replicas
    (`min.insync.replicas=2` with acks=all): one broker may die without losing an acknowledged
    record or stopping writes. Retention: the core topics keep the broker's default unless
    KAFKA_TOPIC_RETENTION_S says otherwise; dead letters are kept DLQ_RETENTION_S."""
    t, rf, n = settings.topics, settings.kafka_replication_factor, settings.kafka_partitions
    durable = durable_configs(settings)
    kept = {**durable, **_retention(settings.kafka_topic_retention_s)}
    return [
        NewTopic(t.jobs, n, rf, topic_configs={"max.message.bytes": str(MAX_MESSAGE_BYTES), **kept}),
        NewTopic(t.tasks, settings.kafka_tasks_partitions, rf, topic_configs=kept),
        NewTopic(t.results, n, rf, topic_configs=kept),
        NewTopic(t.status, n, rf, topic_configs={"cleanup.policy": "compact",
                                                 "delete.retention.ms": str(TOMBSTONE_RETENTION_MS), **durable}),
        NewTopic(t.dlq, 1, rf, topic_configs={"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES), **durable,
                                              **_retention(settings.dlq_retention_s)}),
    ]


def _retention(seconds: float | None) -> dict[str, str]:
    return {} if seconds is None else {"retention.ms": str(round(seconds * 1000))}


def durable_configs(settings: CommonSettings) -> dict[str, str]:
    return {"min.insync.replicas": "2"} if settings.kafka_replication_factor >= 3 else {}


@asynccontextmanager
async def admin_client(settings: CommonSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=10000,
                                **kafka_security(settings))
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
    or `specs`; and bring existing ones' configs up to `specs` (a DLQ topic's
    `max.message.bytes`, a retention set since they were made)."""
    wanted = specs if specs is not None else topic_specs(settings)
    async with admin_client(settings) as admin:
        existing = set(await admin.list_topics())
        missing = [spec for spec in wanted if spec.name not in existing]
        for spec in wanted:
            if spec.name in existing and spec.topic_configs:
                await _bring_up_to_date(admin, spec)
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


async def _bring_up_to_date(admin: AIOKafkaAdminClient, spec: NewTopic) -> None:
    """Set an existing topic's configs to `spec`'s when any differs (a DLQ topic created before
    dead letters kept records whole, with the broker's default 1 MB limit; a retention set since
    the topic was made); a topic already as specified is left alone.

    AlterConfigs (aiokafka has no IncrementalAlterConfigs) replaces every dynamic config of the
    topic, so this sets the topic's complete intended config: `spec.topic_configs`."""
    resource = ConfigResource(ConfigResourceType.TOPIC, spec.name, dict.fromkeys(spec.topic_configs))
    current = _config_values(await admin.describe_configs([resource]))
    stale = stale_configs(current, spec.topic_configs)
    if not stale:
        return
    configs = dict(spec.topic_configs)
    if "max.message.bytes" not in stale and "max.message.bytes" in configs:  # larger already: kept
        configs["max.message.bytes"] = str(current["max.message.bytes"])
    altered = await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, spec.name, configs)])
    for response in altered:
        for error_code, message, *_ in response.resources:
            if error_code:
                raise for_code(error_code)(f"setting {spec.name}'s configs {configs}: {message}")
    log.info("set %s's configs %s (were %s)", spec.name, {k: spec.topic_configs[k] for k in stale},
             {k: current.get(k) for k in stale})


def stale_configs(current: dict[str, str | None], wanted: dict[str, str]) -> list[str]:
    """The configs of `wanted` a topic does not have yet. A size limit already larger is kept."""
    def ok(name: str, value: str) -> bool:
        now = current.get(name)
        if now is None:
            return False
        if name == "max.message.bytes":
            return int(now) >= int(value)
        return now == value
    return [name for name, value in wanted.items() if not ok(name, value)]


def _config_values(responses: list[Any]) -> dict[str, str | None]:
    """name -> value of every config entry in DescribeConfigs responses (errors raised)."""
    out: dict[str, str | None] = {}
    for response in responses:
        for error_code, message, _type, name, entries in response.resources:
            if error_code:
                raise for_code(error_code)(f"describing {name}'s configs: {message}")
            out.update({entry[0]: entry[1] for entry in entries})
    return out


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str, wait_s: float = 2.0) -> list[TopicPartition]:
    """Every partition of `topic`, in order ([] when no such topic appears within `wait_s`), by
    aiokafka's public API alone. A topic created after the consumer started is not in its
    metadata yet: asking for the end of its partition 0 (every topic has one) makes aiokafka
    fetch the topic's metadata, all partitions at once."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        if asyncio.get_running_loop().time() >= deadline:
            return []
        if topic in await consumer.topics():
            await consumer.end_offsets([TopicPartition(topic, 0)])
        else:
            await asyncio.sleep(0.1)


async def read_to_end(consumer: AIOKafkaConsumer, partitions: list[TopicPartition],
                      poll_ms: int = 500) -> AsyncIterator[ConsumerRecord[Any, Any]]:
    """Every record on `partitions` from the beginning up to their ends as they are when this
    starts, then stop. `consumer` is started and in no group (group_id=None): this assigns it
    the partitions."""
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    ends = await consumer.end_offsets(partitions)
    while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
        for tp, records in (await consumer.getmany(*partitions, timeout_ms=poll_ms)).items():
            for record in records:
                if record.offset < ends[tp]:
                    yield record
