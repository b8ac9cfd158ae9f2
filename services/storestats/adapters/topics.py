"""The topics the service needs before faust starts: the core's results topic (read only,
created by the core: this service waits for it rather than creating it) and its own output."""

from __future__ import annotations

from aiokafka.admin import NewTopic

from services.storestats.settings import StoreStatsSettings
from shared.kafka import durable_configs, ensure_topics, existing_topics
from shared.retry import TransientCondition
from shared.runtime import retry_forever


def stats_topic_spec(settings: StoreStatsSettings) -> NewTopic:
    """`<prefix>.store-stats`: one record per change of a (store, window), keyed by
    `store_id|window_start`; compacted (the latest per key stays) and deleted after retention."""
    configs = {"cleanup.policy": "compact,delete", **durable_configs(settings)}
    return NewTopic(settings.stats_topic, settings.kafka_partitions, settings.kafka_replication_factor,
                    topic_configs=configs)


async def prepare_topics(settings: StoreStatsSettings) -> None:
    async def results_topic_exists() -> None:
        if settings.topics.results not in await existing_topics(settings):
            raise TransientCondition(f"{settings.topics.results} does not exist yet (the core creates it)")

    await retry_forever("waiting for the results topic", results_topic_exists)
    specs = [stats_topic_spec(settings)]
    await retry_forever("creating the store statistics topics", lambda: ensure_topics(settings, specs))
