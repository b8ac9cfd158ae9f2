"""One retry policy for work on records (issue 19, item 2: "one retry policy").

- A **transient infrastructure error** (a connection refused or reset, a timeout, the broker or
  the database unavailable, the store master not imported yet) is retried with exponential
  backoff and full jitter, for as long as it lasts: with Kafka or PostgreSQL down for minutes
  the work waits and nothing is lost. The budget is what makes "transient" honest: once an
  operation has failed transiently `TRANSIENT_BUDGET` times in a row *while the process's
  dependencies answer their health probes*, the error is the record's, not the
  infrastructure's (a statement the record makes time out, say), and it is treated as
  permanent.
- **Anything else** (a data error the database refuses, a value out of range, a programming
  error) is retried a small, bounded number of times (a race may pass on the next try), then
  `PermanentFailure` is raised: the consumer loop isolates the record that causes it and
  dead-letters it (shared/consumer.py), so one record never stops a partition.

`retry_record_work` is that policy. `shared.runtime.retry_forever` remains for setting up
connections at start-up (retried for ever: until then the service is simply not ready); it
retries only what `is_infrastructure` says is the infrastructure's, and raises anything else.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
from aiokafka.errors import KafkaError
from psycopg_pool import PoolTimeout

from shared.waits import within

log = logging.getLogger(__name__)
T = TypeVar("T")

PERMANENT_ATTEMPTS = 3  # tries of an operation failing with a non-transient error
TRANSIENT_BUDGET = 12  # transient failures in a row (about a minute of backoff) before asking the probes
BASE_DELAY_S, MAX_DELAY_S = 0.2, 5.0
_FILE_SYSTEM_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)
_NETWORK_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH,
                   errno.ENETUNREACH, errno.ETIMEDOUT, errno.EPIPE, errno.ENOTCONN}

# Set while a consumer isolates a refused record: a data error is deterministic, so each
# half of a split batch gets one try, not PERMANENT_ATTEMPTS.
isolating: contextvars.ContextVar[bool] = contextvars.ContextVar("isolating", default=False)
_health_probe: Callable[[], Awaitable[bool]] | None = None


class PermanentFailure(Exception):  # noqa: N818 - the outcome of a policy, not a bug class
    """An operation failed with an error that retrying does not cure; `cause` is the error."""

    def __init__(self, what: str, cause: BaseException) -> None:
        super().__init__(f"{what}: {type(cause).__name__}: {str(cause)[:500]}")
        self.what = what
        self.cause = cause


class TransientCondition(Exception):  # noqa: N818 - a condition that passes, not a bug
    """Raised by code of this project for a condition that is known to pass (a dependency not
    ready yet): classified as transient."""


def set_health_probe(probe: Callable[[], Awaitable[bool]] | None) -> None:
    """How this process asks whether Kafka and PostgreSQL answer (the Runtime sets it)."""
    global _health_probe
    _health_probe = probe


def is_transient(exc: BaseException) -> bool:
    """A failure of the infrastructure, not of the record or the code."""
    if isinstance(exc, TransientCondition | PoolTimeout | TimeoutError | ConnectionError):
        return True
    if isinstance(exc, psycopg.OperationalError):
        # 54xxx (a statement too big for the server's limits) is the data's fault, not the server's
        return not isinstance(exc, psycopg.errors.ProgramLimitExceeded)
    if isinstance(exc, psycopg.InterfaceError):  # the connection was closed under us
        return True
    if isinstance(exc, KafkaError):
        return bool(getattr(exc, "retriable", False)) or type(exc).__name__ in (
            "KafkaConnectionError", "KafkaTimeoutError", "NodeNotReadyError", "RequestTimedOutError")
    if isinstance(exc, OSError):
        return exc.errno in _NETWORK_ERRNOS
    return False


def is_infrastructure(exc: BaseException) -> bool:
    """Kafka, PostgreSQL or the network failing, or a condition known to pass: what
    `shared.runtime.retry_forever` waits out. Wider than `is_transient`: any Kafka error (a
    rebalance under a commit, an ACL not created yet), any operational database error, any OS
    error but the file system's (a host name that does not resolve yet, asyncio's "Multiple
    exceptions" of refused connections); never a programming error, a missing file or a value refused."""
    if isinstance(exc, _FILE_SYSTEM_ERRORS):
        return False
    return is_transient(exc) or isinstance(exc, KafkaError | psycopg.OperationalError | OSError)


def backoff_s(attempt: int) -> float:
    """Full jitter: uniform in [0, min(MAX, BASE * 2^attempt)] (attempt counts from 0)."""
    return random.uniform(0, min(MAX_DELAY_S, BASE_DELAY_S * 2 ** min(attempt, 16)))


async def retry_record_work(what: str, op: Callable[[], Awaitable[T]],
                            attempts: int = PERMANENT_ATTEMPTS) -> T:
    """Run `op` under the policy above; returns what it returned, or raises PermanentFailure.

    The first attempt runs without any retry machinery (this wraps every batch and task on the
    hot paths, where a failure is rare). Cancellation is never retried."""
    try:
        return await op()
    except Exception as exc:  # noqa: BLE001 - classified below; CancelledError is not an Exception
        failure: Exception = exc
    permanent_tries, transient_run = 1, 0
    limit = 1 if isolating.get() else attempts
    while True:
        if is_transient(failure) and not await _persists_while_healthy(transient_run):
            transient_run += 1
            delay = backoff_s(transient_run)
            log.warning("%s failed (%s: %s); retrying in %.1fs", what, type(failure).__name__, failure, delay)
        else:
            if permanent_tries >= limit:
                log.error("%s failed %d time(s) with %s: %s; giving up on it", what, permanent_tries,
                          type(failure).__name__, failure)
                raise PermanentFailure(what, failure) from failure
            permanent_tries += 1
            delay = 0.1 * permanent_tries
            log.warning("%s failed (%s: %s); trying again", what, type(failure).__name__, failure)
        await asyncio.sleep(delay)
        try:
            return await op()
        except Exception as exc:  # noqa: BLE001
            failure = exc


async def _persists_while_healthy(transient_run: int) -> bool:
    """A 'transient' error that outlived its budget while Kafka and PostgreSQL answer is the
    record's own (no probe set: never)."""
    if transient_run < TRANSIENT_BUDGET or _health_probe is None:
        return False
    try:
        return await within(5.0, _health_probe())
    except Exception:  # noqa: BLE001 - a probe that cannot answer: the infrastructure is the suspect
        return False
