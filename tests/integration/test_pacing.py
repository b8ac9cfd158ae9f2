"""The consumer loop's adaptive batching on a real broker (shared/consumer.py, shared/pacing.py):
a stream of hundreds of events a second is handed over in rounds of many, every event exactly
once; once the stream ends the loop fetches as a quiet one again (answered by the first record).
It also fails if an aiokafka upgrade drops the fetcher attributes the loop sets."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from shared.consumer import Batch, ConsumerLoop
from shared.events import JobReleased, encode_event
from shared.kafka import BUSY_FETCH_MIN_BYTES, ensure_topics, fetch_wait
from shared.pacing import Pacer
from shared.runtime import Runtime
from shared.settings import CommonSettings
from tests.support.fold import ScratchView
from tests.support.stack import Infra

EVENTS = 1500


async def wait_until(condition, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def stream_and_then_one(infra: Infra, database_url: str, busy_wait_ms: int) -> dict[str, Any]:
    settings = CommonSettings(kafka_bootstrap_servers=infra.kafka.bootstrap, database_url=database_url,
                              kafka_topic_prefix=f"pacing{uuid.uuid4().hex[:8]}", busy_batch_wait_ms=busy_wait_ms)
    await ensure_topics(settings)
    runtime = Runtime(settings, "pacing")
    await runtime.start()
    rounds: list[list[uuid.UUID]] = []

    async def handle(batch: Batch) -> None:
        rounds.append([e.job_id for e in batch.events])
    loop = ConsumerLoop(settings, runtime, "pacing", [settings.topics.jobs], handle, commit="after_batch")
    consuming = asyncio.create_task(loop.run())
    try:
        await wait_until(lambda: bool(loop.owned()) or consuming.done(), 30, "the partitions to be assigned")
        if consuming.done():
            consuming.result()
        sent = []
        for _ in range(EVENTS // 5):  # about 1,000 events a second, five at a time
            for _ in range(5):
                event = JobReleased(job_id=uuid.uuid4(), scheduled_time=datetime.now(UTC), total_images=1)
                sent.append(event.job_id)
                await runtime.producer.send(settings.topics.jobs, encode_event(event), key=str(event.job_id).encode())
            await asyncio.sleep(0.005)
        await wait_until(lambda: sum(map(len, rounds)) >= EVENTS, 30, "every event to be handed over")
        busy_wait = fetch_wait(loop.consumer)  # type: ignore[arg-type]
        quiet = (settings.kafka_fetch_min_bytes, settings.kafka_fetch_max_wait_ms)
        await wait_until(lambda: fetch_wait(loop.consumer) == quiet, 10, "the fetches to be quiet again")  # type: ignore[arg-type]
        # the loop turns quiet as soon as the decaying rate is under the line; the lone event's
        # own arrival must not lift it back over (a rate just under it plus one event is busy)
        await wait_until(lambda: quiet_after_one_more(loop.pacer), 10, "the rate to be well under busy")
        lone = JobReleased(job_id=uuid.uuid4(), scheduled_time=datetime.now(UTC), total_images=1)
        await runtime.producer.send_and_wait(settings.topics.jobs, encode_event(lone), key=str(lone.job_id).encode())
        await wait_until(lambda: any(lone.job_id in r for r in rounds), 30, "the lone event")
        return {"sent": sent, "rounds": rounds, "busy_wait": busy_wait, "quiet": quiet,
                "quiet_wait": fetch_wait(loop.consumer), "lone": lone.job_id}  # type: ignore[arg-type]
    finally:
        consuming.cancel()
        await asyncio.gather(consuming, return_exceptions=True)
        await loop.close()
        await runtime.stop()


def quiet_after_one_more(pacer: Pacer) -> bool:
    """Whether one more event now would leave the pacer quiet."""
    now = time.monotonic()
    return (pacer.rate.at(now) + 1 / pacer.rate.tau_s) * pacer.busy_wait_s < pacer.min_expected


def stream_and_then_one_on_a_scratch_database(infra: Infra, busy_wait_ms: int) -> dict[str, Any]:
    database = ScratchView(infra.pg.url)  # a database of its own, with the schema
    try:
        return asyncio.run(stream_and_then_one(infra, database.url, busy_wait_ms))
    finally:
        database.drop()


def delivered_once_each(got: dict[str, Any]) -> float:
    """Every event handed over exactly once; returns the stream's mean round size."""
    delivered = [j for r in got["rounds"] for j in r]
    assert sorted(delivered) == sorted([*got["sent"], got["lone"]])
    stream_rounds = [r for r in got["rounds"] if got["lone"] not in r]
    return len(got["sent"]) / len(stream_rounds)


def test_a_stream_is_handed_over_in_rounds_of_many_and_a_lone_event_without_waiting(infra: Infra) -> None:
    """The same stream with BUSY_BATCH_WAIT_MS=20 and with 0 (off), back to back."""
    paced, unpaced = (stream_and_then_one_on_a_scratch_database(infra, busy_wait_ms=ms) for ms in (20, 0))
    paced_round, unpaced_round = delivered_once_each(paced), delivered_once_each(unpaced)
    # measured here: ~22 paced, ~7 unpaced (1,500 events at ~1,000/s)
    assert paced_round >= 10 and paced_round >= 1.5 * unpaced_round, (paced_round, unpaced_round)
    assert paced["busy_wait"] == (max(BUSY_FETCH_MIN_BYTES, paced["quiet"][0]), min(20, paced["quiet"][1]))
    assert paced["quiet_wait"] == paced["quiet"]  # the settings' own fetch: answered by the first record
    assert unpaced["busy_wait"] == unpaced["quiet_wait"] == unpaced["quiet"]
