"""The one retry policy (shared/retry.py) and how the consumer loop isolates a record the handler
refuses for good (shared/consumer.py): pure asyncio, fakes for Kafka, milliseconds."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError, RequestTimedOutError
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg_pool import PoolTimeout

from shared import retry
from shared.consumer import Batch, ConsumerLoop, Delivery
from shared.retry import PermanentFailure, TransientCondition, is_transient, retry_record_work
from shared.settings import CommonSettings
from tests.support.records import Record


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff is the policy's business, not the test's: the clock is skipped."""
    real_sleep = asyncio.sleep

    async def instant(_: float) -> None:
        await real_sleep(0)
    monkeypatch.setattr(retry.asyncio, "sleep", instant)


@pytest.mark.parametrize("error", [
    ConnectionRefusedError(), ConnectionResetError(), TimeoutError(), PoolTimeout("pool"),
    psycopg.OperationalError("server closed the connection"), KafkaConnectionError(), RequestTimedOutError(),
    OSError(errno.EHOSTUNREACH, "no route"), TransientCondition("not imported yet"),
])
def test_infrastructure_errors_are_transient(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize("error", [
    psycopg.errors.UntranslatableCharacter("\\u0000"), psycopg.errors.NumericValueOutOfRange("int"),
    psycopg.errors.CheckViolation("check"), psycopg.errors.ProgramLimitExceeded("index row too big"),
    MessageSizeTooLargeError(), AttributeError("bug"), ValueError("bad"), KeyError("x"), OSError(errno.ENOSPC, "full"),
])
def test_data_and_programming_errors_are_not(error: BaseException) -> None:
    assert not is_transient(error)


def failing(errors: list[BaseException], result: str = "done") -> tuple[Callable[[], Awaitable[str]], list[int]]:
    calls: list[int] = []

    async def op() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result
    return op, calls


def test_a_transient_error_is_retried_for_as_long_as_it_lasts() -> None:
    op, calls = failing([ConnectionResetError()] * 40)
    assert asyncio.run(retry_record_work("flaky", op)) == "done"
    assert len(calls) == 41


def test_any_other_error_is_tried_a_bounded_number_of_times_then_raised_as_permanent() -> None:
    op, calls = failing([AttributeError("boom")] * 10)
    with pytest.raises(PermanentFailure) as raised:
        asyncio.run(retry_record_work("bug", op))
    assert len(calls) == retry.PERMANENT_ATTEMPTS and isinstance(raised.value.cause, AttributeError)


def test_a_transient_looking_error_that_persists_while_the_dependencies_answer_is_the_records() -> None:
    async def healthy() -> bool:
        return True
    retry.set_health_probe(healthy)
    try:
        op, calls = failing([psycopg.errors.QueryCanceled("statement timeout")] * 100)
        with pytest.raises(PermanentFailure):
            asyncio.run(retry_record_work("slow statement", op))
        assert len(calls) < retry.TRANSIENT_BUDGET + retry.PERMANENT_ATTEMPTS + 2
    finally:
        retry.set_health_probe(None)


def test_while_the_dependencies_are_down_a_transient_error_is_never_given_up() -> None:
    async def down() -> bool:
        return False
    retry.set_health_probe(down)
    try:
        op, calls = failing([psycopg.OperationalError("down")] * 60)
        assert asyncio.run(retry_record_work("waiting", op)) == "done"
        assert len(calls) == 61
    finally:
        retry.set_health_probe(None)


def test_a_cancellation_is_never_retried() -> None:
    op, calls = failing([asyncio.CancelledError()])
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(retry_record_work("cancelled", op))
    assert len(calls) == 1


# -- the consumer loop isolates what its handler refuses --------------------------------------
@dataclass
class FakeProducer:
    sent: list[tuple[str, bytes | None, bytes | None]] = field(default_factory=list)

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                            **_: Any) -> None:
        self.sent.append((topic, key, value))


@dataclass
class FakeRuntime:
    producer: FakeProducer = field(default_factory=FakeProducer)

    def add_check(self, name: str, check: Any) -> None:
        pass


class Handler:
    """Applies events, refusing for good any batch holding a poison one; keeps the offsets it
    was handed (as the status view stores them)."""

    def __init__(self, poison: set[int]) -> None:
        self.poison, self.applied, self.offsets = poison, [], {}  # type: ignore[var-annotated]

    async def __call__(self, batch: Batch) -> None:
        async def apply() -> None:
            if any(e in self.poison for e in batch.events):
                raise psycopg.errors.CheckViolation("refused")
        await retry_record_work("applying", apply)
        self.applied += batch.events
        for tp, offset in batch.next_offsets().items():
            assert offset > self.offsets.get(tp, -1), "offsets only move forward"
            self.offsets[tp] = offset


def run_batch(events: list[int], poison: set[int], partitions: int = 3) -> tuple[Handler, FakeRuntime, list[Any]]:
    runtime, handler, refused = FakeRuntime(), Handler(poison), []

    async def told(event: Any, reason: str) -> None:
        refused.append((event, reason))
    loop = ConsumerLoop(CommonSettings(), runtime, "test", ["t"], handler, commit="by_handler",  # type: ignore[arg-type]
                        refused=told)
    batch = Batch([Delivery(TopicPartition("t", i % partitions), i // partitions, 0, event,
                            Record("t", i % partitions, i // partitions, str(event).encode()))
                   for i, event in enumerate(events)])
    asyncio.run(loop._apply(batch))  # noqa: SLF001 - the loop's unit of work, without a broker
    return handler, runtime, refused


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=40, unique=True), st.data())
def test_a_refused_record_is_isolated_and_dead_lettered_and_the_rest_applied(events: list[int], data: Any) -> None:
    poison = set(data.draw(st.lists(st.sampled_from(events), max_size=3)))
    handler, runtime, refused = run_batch(events, poison)
    assert sorted(handler.applied) == sorted(e for e in events if e not in poison)
    assert sorted(int(value) for _, _, value in runtime.producer.sent) == sorted(poison)  # type: ignore[arg-type]
    assert sorted(e for e, _ in refused) == sorted(poison)
    assert all(reason.startswith("refused: applying: CheckViolation") for _, reason in refused)
    ends = {TopicPartition("t", i % 3): i // 3 + 1 for i in range(len(events))}
    assert handler.offsets == ends  # every offset counts, the dead-lettered ones too
