"""The faust app: its topic, its database pool and the totals it exports (bootstrap.py adds
the agent of adapters/stream.py, which runs the use case of handlers.py, and the pages of
adapters/web.py).

faust reads the stream (consumer group `<prefix>.storestats`, at least once: it commits only
acked offsets); the state lives in PostgreSQL, keyed by `task_id`, rather than in faust's
tables. That was measured: with tables, faust's exactly_once lost counts or stalled after
kill -9 in 3 of 3 runs (a re-keyed record waited in another partition's open transaction,
commits did not wait for queued changelog records), while at-least-once delivery into an
idempotent table is exact by construction, as everywhere else in imagejobs.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from psycopg_pool import AsyncConnectionPool

from services.storestats.domain import StoreTotals
from services.storestats.settings import StoreStatsSettings
from shared.db import make_pool
from shared.kafka import kafka_security
from shared.stall import StallWatch

log = logging.getLogger(__name__)


@dataclass
class StatsApp:
    app: faust.App
    settings: StoreStatsSettings
    results: Any  # the faust topic
    pool: AsyncConnectionPool
    totals: dict[str, StoreTotals] = field(default_factory=dict)  # what /metrics exports
    loaded: asyncio.Event = field(default_factory=asyncio.Event)  # tables made, totals read
    stall: StallWatch = field(default_factory=lambda: StallWatch(60.0))  # batches written


def broker_credentials(settings: StoreStatsSettings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """KAFKA_SECURITY_PROTOCOL and KAFKA_SASL_* in faust's terms (the same checks as every other
    service's clients: shared.kafka.kafka_security raises a ValueError naming what is missing)."""
    security = kafka_security(settings)
    protocol, ssl_context = security["security_protocol"], security.get("ssl_context")
    if protocol.startswith("SASL_"):
        return faust.SASLCredentials(username=security["sasl_plain_username"],
                                     password=security["sasl_plain_password"],
                                     mechanism=security["sasl_mechanism"], ssl_context=ssl_context)
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context)
    return None


# A fetch waits at the broker until this much data is there, or this long: store statistics are
# a report, so up to 100 ms more for a lone result costs nobody anything.
FETCH_MIN_BYTES, FETCH_MAX_WAIT_MS = 64 * 1024, 100
# Records faust holds for the agent (its default: 4,096). While counting waits for the core
# (yielding.py) what is fetched before faust stops fetching is this plus the writer's queue,
# each record's share of faust's work spent in the burst the wait is for.
STREAM_BUFFER = 1000


def fetch_in_batches() -> None:
    """faust builds its aiokafka consumer with `fetch_min_bytes=1` (and `fetch_max_wait_ms=1500`)
    and has no setting for either, so in a burst each fetch brought a few records and faust's
    work per fetch (a call into its consumer thread, three futures, a wait) came with each few.
    Measured on this service alone (20,000 results at 3,000/s): 110-120 -> 85-107 µs of CPU per
    result. aiokafka (0.12-0.14) keeps both on the consumer and hands them to its fetcher when
    it starts (tests/unit/test_store_stats_fetch.py checks both); a consumer without them is left
    as faust built it, with a warning."""
    create = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "fetches_in_batches", False):
        return

    def batched(self: AIOKafkaConsumerThread, transport: Any) -> Any:
        consumer = create(self, transport)
        if hasattr(consumer, "_fetch_min_bytes") and hasattr(consumer, "_fetch_max_wait_ms"):
            consumer._fetch_min_bytes, consumer._fetch_max_wait_ms = FETCH_MIN_BYTES, FETCH_MAX_WAIT_MS
        else:
            log.warning("this aiokafka keeps no fetch wait on its consumer: store statistics fetch unbatched")
        return consumer
    batched.fetches_in_batches = True  # type: ignore[attr-defined]
    batched.__wrapped__ = create  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = batched  # type: ignore[method-assign]


def new_faust_app(settings: StoreStatsSettings) -> faust.App:
    fetch_in_batches()
    return faust.App(
        settings.app_id,
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap_servers.split(",")],
        broker_credentials=broker_credentials(settings),
        store="memory://",  # no faust tables: the state is in PostgreSQL
        topic_replication_factor=settings.kafka_replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10.0, broker_heartbeat_interval=2.0,  # a killed member leaves in 10 s
        broker_commit_interval=1.0,
        stream_buffer_maxsize=STREAM_BUFFER,
        producer_acks=-1,
        web_port=settings.storestats_port, web_bind=settings.http_host, web_host=settings.http_host,
        datadir=settings.storestats_data_dir,
        loghandlers=None,
    )


def stats_app(settings: StoreStatsSettings) -> StatsApp:
    """The app with its topic and pool; bootstrap.build adds the agent and the pages."""
    app = new_faust_app(settings)
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    pool = make_pool(settings.database_url, max_size=2)  # opened by the writer (adapters/stream.py)
    return StatsApp(app=app, settings=settings, results=app.topic(settings.topics.results, **raw), pool=pool,
                    stall=StallWatch(settings.stall_s))
