"""The faust app: its topics and tables (the agents are in handlers.py, the pages in adapters/web.py).

Two agents, because faust's tables must be partitioned like the stream that writes them:
`forward` reads `<prefix>.results` (keyed by job) and re-keys each outcome by store to the
app's own topic; `count` reads that topic and keeps three tables on the same partitions:
the task ids already counted, the per-store statistics in tumbling windows, and each store's
totals for Prometheus. With `processing_guarantee="exactly_once"` a partition's table
changes and the agent's consumed offsets are committed in one Kafka transaction (with the fix
in adapters/faust_commit.py), so after a kill the tables hold every counted outcome once. The
records the agents send are not part of those transactions (see handlers.py): a restart may
send some again, which the task-id table absorbs, and the published statistics are absolute
values, so a repeat of one changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import faust
from faust.types import EventT

from services.storestats.adapters.faust_commit import CommitGate
from services.storestats.domain import parse_outcome
from services.storestats.settings import StoreStatsSettings


@dataclass
class StatsApp:
    app: faust.App
    settings: StoreStatsSettings
    results: Any  # faust topics
    by_store: Any
    seen: Any  # windowed table: task_id -> 1, by event time, kept 1-2 dedup periods
    windows: Any  # windowed table: store_id -> WindowStats json, tumbling windows
    totals: Any  # table: store_id -> StoreTotals json
    gate: CommitGate  # held while tables change; commits wait for it


def event_time(event: EventT) -> float:
    """The window clock: the outcome's `occurred_at` (event time), never the wall clock."""
    outcome = parse_outcome(event.value)
    assert outcome is not None, "only outcomes reach the count agent"
    return outcome.occurred_at.timestamp()


def new_faust_app(settings: StoreStatsSettings) -> faust.App:
    return faust.App(
        settings.app_id,
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap_servers.split(",")],
        store="memory://",  # rebuilt from the changelog topics at start (rocksdb needs a native build)
        processing_guarantee="exactly_once",
        topic_partitions=settings.kafka_partitions,
        topic_replication_factor=settings.kafka_replication_factor,
        table_standby_replicas=0,  # one instance; a standby's rows would be exported twice
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10.0, broker_heartbeat_interval=2.0,  # a killed member leaves in 10 s
        broker_commit_interval=1.0,
        producer_acks=-1,
        web_port=settings.storestats_port, web_bind=settings.http_host, web_host=settings.http_host,
        datadir=settings.storestats_data_dir,
        loghandlers=None,
    )


def build(settings: StoreStatsSettings) -> StatsApp:
    """The app with its topics and tables; `__main__` adds the agents and the pages."""
    app = new_faust_app(settings)
    # faust decides whether to use transactions the first time `in_transaction` is read, which
    # is `in_worker and exactly_once`; `in_worker` is set only in Worker.on_start, after the
    # commit gate below has created the consumer. Without this, exactly_once silently became
    # at-least-once (no transactional producer started; found while chasing a lost count).
    app.in_worker = True
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    window, keep, dedup = settings.storestats_window_s, settings.storestats_window_keep_s, settings.storestats_dedup_s
    stats = StatsApp(
        app=app, settings=settings,
        results=app.topic(settings.topics.results, **raw),
        by_store=app.topic(settings.by_store_topic, partitions=settings.kafka_partitions, internal=True, **raw),
        seen=app.Table("seen", default=int).tumbling(dedup, expires=timedelta(seconds=2 * dedup))
        .relative_to(event_time),
        windows=app.Table("windows", default=dict).tumbling(window, expires=timedelta(seconds=keep))
        .relative_to(event_time),
        totals=app.Table("totals", default=dict),
        gate=CommitGate(app),
    )
    stats.gate.install()
    return stats
