"""The store statistics' faust consumer asks the broker for batches (services/storestats/app.py
`fetch_in_batches`); built, not started: no Kafka."""

from __future__ import annotations

import asyncio
import inspect

from aiokafka import AIOKafkaConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from services.storestats.app import FETCH_MAX_WAIT_MS, FETCH_MIN_BYTES, new_faust_app
from services.storestats.settings import StoreStatsSettings


def test_the_faust_consumer_waits_at_the_broker_for_a_batch() -> None:
    """faust's own consumer asks for 1 byte or 1.5 s; the patched one for FETCH_MIN_BYTES or
    FETCH_MAX_WAIT_MS, and building the app twice wraps faust's builder once."""
    async def built() -> tuple[tuple[int, int], tuple[int, int]]:
        new_faust_app(StoreStatsSettings(kafka_bootstrap_servers="127.0.0.1:1"))
        app = new_faust_app(StoreStatsSettings(kafka_bootstrap_servers="127.0.0.1:1"))
        patched = AIOKafkaConsumerThread._create_worker_consumer
        assert not getattr(patched.__wrapped__, "fetches_in_batches", False)
        consumers = [create(app.consumer._thread, app.transport) for create in (patched.__wrapped__, patched)]
        try:
            return tuple((c._fetch_min_bytes, c._fetch_max_wait_ms) for c in consumers)  # type: ignore[return-value]
        finally:
            for consumer in consumers:
                await consumer.stop()
    faust_own, ours = asyncio.run(built())
    assert faust_own == (1, 1500)
    assert ours == (FETCH_MIN_BYTES, FETCH_MAX_WAIT_MS) == (64 * 1024, 100)


def test_aiokafka_hands_the_consumers_fetch_wait_to_its_fetcher() -> None:
    """The patch sets the consumer's attributes; they matter only because `start()` builds the
    fetcher from them. A later aiokafka that stopped doing so would make the patch a silent no-op."""
    source = inspect.getsource(AIOKafkaConsumer.start)
    assert "fetch_min_bytes=self._fetch_min_bytes" in source
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in source
