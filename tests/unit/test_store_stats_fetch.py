"""The store statistics' faust consumer asks the broker for batches (services/storestats/app.py
`fetch_in_batches`); built, not started: no Kafka."""

from __future__ import annotations

import asyncio

from services.storestats.app import FETCH_MAX_WAIT_MS, FETCH_MIN_BYTES, new_faust_app
from services.storestats.settings import StoreStatsSettings


def test_the_faust_consumer_waits_at_the_broker_for_a_batch() -> None:
    """app.fetch_in_batches: the consumer faust builds asks the broker for FETCH_MIN_BYTES or
    FETCH_MAX_WAIT_MS (faust's own: 1 byte, 1.5 s), and building the app twice patches once."""
    async def built() -> tuple[int, int]:
        new_faust_app(StoreStatsSettings(kafka_bootstrap_servers="127.0.0.1:1"))
        app = new_faust_app(StoreStatsSettings(kafka_bootstrap_servers="127.0.0.1:1"))
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return consumer._fetch_min_bytes, consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()
    assert asyncio.run(built()) == (FETCH_MIN_BYTES, FETCH_MAX_WAIT_MS) == (64 * 1024, 100)
