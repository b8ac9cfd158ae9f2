"""The consumer loop never waits for ever on a group join: aiokafka's `getmany` waits without a
limit while its consumer joins, so a join that never completes would park the loop (and the
service's whole stream) for good. The loop bounds each fetch, reports the wait on readiness, and
after CONSUMER_REJOIN_DEADLINE_S replaces the consumer with a new one, which joins afresh.

Broker-free: the loop's policy with consumers that behave as a stuck and a healthy aiokafka
consumer do (a real broker cannot be made to hang a join on demand)."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from unittest.mock import patch

from aiokafka import TopicPartition

from shared.consumer import Batch, ConsumerLoop
from shared.events import JobCancelled, encode_event
from shared.settings import CommonSettings
from shared.stall import JoinWatch
from tests.support.records import Record
from tests.support.waiting import until


@dataclass
class FakeConsumer:
    """`stuck`: every fetch waits for an assignment that never comes (as aiokafka's getmany does
    while a join never completes); otherwise one record, then nothing."""

    stuck: bool
    records: list[Record] = field(default_factory=list)
    started: bool = False
    stopped: bool = False
    fetches: int = 0

    async def start(self) -> None:
        self.started = True

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        pass

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        self.fetches += 1
        if self.stuck:
            await asyncio.Event().wait()
        if self.records:
            record, self.records = self.records[0], self.records[1:]
            return {TopicPartition(record.topic, record.partition): [record]}
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("t", 0)} if not self.stuck else set()

    async def stop(self) -> None:
        self.stopped = True


@dataclass
class FakeRuntime:
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    tracked: list[FakeConsumer] = field(default_factory=list)

    def add_check(self, name: str, check: Any) -> None:
        pass

    def track_consumer(self, consumer: FakeConsumer) -> None:
        self.tracked.append(consumer)

    def untrack_consumer(self, consumer: FakeConsumer) -> None:
        self.tracked.remove(consumer)


def event_record() -> Record:
    event = JobCancelled(job_id=uuid.uuid4())
    return Record("t", 0, 0, encode_event(event))


async def run_loop(consumers: list[FakeConsumer], deadline_s: float) -> tuple[ConsumerLoop, list[Batch], FakeRuntime]:
    runtime, handled, made = FakeRuntime(), [], iter(consumers)

    async def handle(batch: Batch) -> None:
        handled.append(batch)
    loop = ConsumerLoop(CommonSettings(consumer_rejoin_deadline_s=deadline_s), runtime, "test", ["t"],  # type: ignore[arg-type]
                        handle, commit="by_handler", timeout_ms=20,
                        make_consumer=lambda: next(made))  # type: ignore[arg-type, return-value]
    runtime.connected.set()
    task = asyncio.create_task(loop.run())
    try:
        await until(lambda: bool(handled) or task.done(), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return loop, handled, runtime


def test_a_consumer_stuck_in_its_group_join_is_replaced_and_the_new_one_consumes() -> None:
    stuck, healthy = FakeConsumer(stuck=True), FakeConsumer(stuck=False, records=[event_record()])
    loop, handled, runtime = asyncio.run(run_loop([stuck, healthy], deadline_s=0.4))
    assert stuck.stopped and healthy.started and not healthy.stopped
    assert loop.consumer is healthy and runtime.tracked == [healthy]  # the stuck one's lag is no longer reported
    assert [type(e).__name__ for e in handled[0].events] == ["JobCancelled"]


def test_readiness_names_the_wait_for_an_assignment() -> None:
    async def scenario() -> tuple[bool | str, bool | str]:
        runtime = FakeRuntime()
        loop = ConsumerLoop(CommonSettings(consumer_rejoin_deadline_s=60), runtime, "test", ["t"],  # type: ignore[arg-type]
                            lambda batch: asyncio.sleep(0), commit="by_handler", timeout_ms=20,
                            make_consumer=lambda: FakeConsumer(stuck=True))  # type: ignore[arg-type, return-value]
        loop.joining.grace_s = 0.05  # a fetch counts as waiting for a join after 70 ms, not 10 s
        runtime.connected.set()
        task = asyncio.create_task(loop.run())
        await until(lambda: loop.consuming, 5)
        before = await loop.ready()
        await until(lambda: loop.joining.waited(time.monotonic()) > 0.1, 5)
        after = await loop.ready()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return before, after
    before, after = asyncio.run(scenario())
    assert before is True
    assert isinstance(after, str) and after.startswith("no partitions assigned by the group for")


def test_a_surplus_member_with_nothing_assigned_is_not_waiting() -> None:
    watch = JoinWatch(deadline_s=120)
    assert watch.grace_s == 10.0 and watch.waited(100.0) == 0.0 and not watch.overdue(1e9)
    assert watch.waiting(100.0) == 10.0  # the fetch that timed out had waited the grace already
    assert watch.waiting(150.0) == 60.0 and not watch.overdue(150.0)
    assert watch.overdue(210.0)
    watch.joined()  # a fetch returned (empty or not): a member, assigned or surplus
    assert watch.waited(300.0) == 0.0 and not watch.overdue(300.0)


def test_a_library_error_repeated_while_a_broker_restarts_is_logged_once_a_minute() -> None:
    import logging

    from shared.logging import OncePer
    once = OncePer("aiokafka", 60.0)

    def record(name: str, msg: str, at: float) -> logging.LogRecord:
        made = logging.LogRecord(name, logging.ERROR, __file__, 1, msg, ("node 1",), None)
        made.created = at
        return made
    passed = [once.filter(record("aiokafka.conn", "Unable connect to %s", t)) for t in (0, 1, 59, 61)]
    assert passed == [True, False, False, True]
    assert once.filter(record("aiokafka.consumer.fetcher", "Unexpected error in fetcher routine", 2))
    assert all(once.filter(record("shared.runtime", "mine", t)) for t in (0, 0, 0))  # not aiokafka: all pass
    retried = record("aiokafka.consumer.group_coordinator", "Group Coordinator Request failed: %s", 0)
    assert once.filter(retried) and retried.levelname == "WARNING"  # aiokafka retries it: not an ERROR
    try:
        raise RuntimeError("bug")
    except RuntimeError:
        died = logging.LogRecord("aiokafka.producer.sender", logging.ERROR, __file__, 1,
                                 "Unexpected error in sender routine", (), sys.exc_info())
    assert once.filter(died) and died.levelname == "ERROR"  # one of its tasks died: stays an ERROR
    mine = record("shared.consumer", "a real error", 0)
    assert once.filter(mine) and mine.levelname == "ERROR"


def test_a_cancellation_from_inside_aiokafka_does_not_end_the_loop_but_a_stop_does() -> None:
    from shared.runtime import fetch_batch

    class CancelsInside:
        async def getmany(self, **_: Any) -> dict[TopicPartition, list[Record]]:
            inner = asyncio.get_running_loop().create_future()
            inner.cancel()
            return await inner  # as a result() of one of aiokafka's cancelled tasks raises

    async def scenario() -> tuple[Any, bool]:
        got = await fetch_batch(CancelsInside(), "test", timeout_ms=10)  # type: ignore[arg-type]

        class Parks:
            async def getmany(self, **_: Any) -> dict[TopicPartition, list[Record]]:
                await asyncio.Event().wait()
                return {}
        stopping = asyncio.create_task(fetch_batch(Parks(), "test"))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        stopping.cancel()
        await asyncio.gather(stopping, return_exceptions=True)
        return got, stopping.cancelled()
    got, stopped = asyncio.run(scenario())
    assert got == {} and stopped


def test_a_stuck_consumer_that_will_not_close_ends_the_loop_with_the_reason() -> None:
    """Its service watches the loop (`exit_if_it_dies`), so the process exits once, for the
    supervisor to restart it."""
    class WillNotClose(FakeConsumer):
        async def stop(self) -> None:
            await asyncio.Event().wait()

    async def scenario() -> BaseException | None:
        runtime = FakeRuntime()
        loop = ConsumerLoop(CommonSettings(consumer_rejoin_deadline_s=0.4), runtime, "test", ["t"],  # type: ignore[arg-type]
                            lambda batch: asyncio.sleep(0), commit="by_handler", timeout_ms=20,
                            make_consumer=lambda: WillNotClose(stuck=True))  # type: ignore[arg-type, return-value]
        runtime.connected.set()
        with patch("shared.consumer.REPLACE_CLOSE_S", 0.05):
            task = asyncio.create_task(loop.run())
            await asyncio.wait({task}, timeout=5)
        return task.exception() if task.done() else None
    error = asyncio.run(scenario())
    assert isinstance(error, RuntimeError) and "did not close" in str(error)
