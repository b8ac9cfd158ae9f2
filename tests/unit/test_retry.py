"""retry_forever (shared/runtime.py, on tenacity): retries what the infrastructure causes
(Kafka, PostgreSQL, the network, a TransientCondition), returns the result, raises a programming
error at once and never retries a cancellation."""

from __future__ import annotations

import asyncio
import errno
import signal
import socket

import psycopg
import pytest
from aiokafka.errors import CommitFailedError, KafkaConnectionError

from shared.retry import TransientCondition
from shared.runtime import retry_forever, retry_in_listener


def test_it_retries_until_the_operation_succeeds_and_returns_its_result() -> None:
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("not yet")
        return "done"
    assert asyncio.run(retry_forever("flaky", lambda: flaky(), max_delay=0.01)) == "done"
    assert len(calls) == 3


@pytest.mark.parametrize("outage", [KafkaConnectionError(), CommitFailedError("rebalanced"),
                                    psycopg.OperationalError("server closed"), ConnectionRefusedError(),
                                    OSError(errno.EHOSTUNREACH, "no route"), TimeoutError(),
                                    socket.gaierror(socket.EAI_AGAIN, "not yet"), TransientCondition("not yet")])
def test_an_outage_of_the_infrastructure_is_retried(outage: Exception) -> None:
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise outage
        return "done"
    assert asyncio.run(retry_forever("flaky", flaky, max_delay=0.01)) == "done"
    assert len(calls) == 3


@pytest.mark.parametrize("outages", [0, 2])
@pytest.mark.parametrize("error", [TypeError("unsupported operand"), KeyError("status"),
                                   FileNotFoundError(errno.ENOENT, "no such migration")])
def test_a_programming_error_is_raised_at_once_not_retried(outages: int, error: Exception) -> None:
    calls = []

    async def buggy() -> None:
        calls.append(1)
        if len(calls) <= outages:
            raise OSError(errno.ECONNREFUSED, "refused")
        raise error
    with pytest.raises(type(error)):
        asyncio.run(retry_forever("buggy", buggy, max_delay=0.01))
    assert len(calls) == outages + 1


def test_a_cancellation_is_not_retried() -> None:
    calls = []

    async def cancelled() -> None:
        calls.append(1)
        raise asyncio.CancelledError()
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(retry_forever("cancelled", cancelled))
    assert len(calls) == 1


def test_retry_after_is_followed_in_seconds_and_capped() -> None:
    from services.processor.domain import retry_after_seconds

    assert retry_after_seconds("3", 10) == 3.0
    assert retry_after_seconds(" 120 ", 10) == 10.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", 10) is None
    assert retry_after_seconds(None, 10) is None


def test_a_download_retry_waits_what_the_server_asked_else_backs_off_with_jitter() -> None:
    from tenacity import RetryCallState

    from services.processor.adapters.fetch import Fetcher, FetchLimits
    from services.processor.domain import ImageError

    fetcher = Fetcher(FetchLimits(1024, 1, 1, 3, 3, 0.05, True))
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = 2
    state.set_exception((ImageError, ImageError("HTTP 503", transient=True, retry_after=2.0), None))
    assert fetcher._wait(state) == 2.0  # noqa: SLF001
    state.set_exception((ImageError, ImageError("HTTP 503", transient=True), None))
    assert 0 <= fetcher._wait(state) <= 0.05 * 2 ** 2  # noqa: SLF001 - full jitter, exponential


def test_a_rebalance_listener_that_hits_a_bug_takes_the_process_down() -> None:
    """aiokafka only logs what a listener raises: without the SIGTERM the consumer would go on
    without the pending jobs or stored offsets the listener was loading."""
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        async def buggy() -> None:
            raise TypeError("unsupported operand")
        with pytest.raises(TypeError):
            asyncio.run(retry_in_listener("loading pending jobs", buggy))
        assert received == [signal.SIGTERM]

        async def fine() -> str:
            return "loaded"
        assert asyncio.run(retry_in_listener("loading pending jobs", fine)) == "loaded"
        assert received == [signal.SIGTERM]  # no second signal
    finally:
        signal.signal(signal.SIGTERM, previous)
