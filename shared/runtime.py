"""What every service runs on: a DB pool, an idempotent producer, retries until both are up,
and the state its operational endpoints report (shared/ops.py: `/healthz`, `/readyz`,
`/metrics`).

Connections are made in the background with backoff, so a service starts (and answers
`/healthz`) while Kafka or PostgreSQL are still coming up or restarting; `/readyz` says 503
until both answer and every check the service added (its consumer joined, the store master
loaded, ...) passes. A timer refreshes `imagejobs_ready` and the consumer lag of every
consumer the service reads with, so a Prometheus scrape alone sees both.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from psycopg_pool import AsyncConnectionPool
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from shared.db import apply_migrations, make_pool
from shared.kafka import ensure_topics, kafka_security, make_producer
from shared.metrics import CONSUMER_LAG, SERVICE_READY
from shared.retry import is_infrastructure, set_health_probe
from shared.settings import CommonSettings
from shared.waits import within

log = logging.getLogger(__name__)
T = TypeVar("T")
REPORT_EVERY_S = 5.0  # readiness and lag gauges; a typical scrape interval is 15 s
# A readiness check answers True (passing), False (failing) or a reason (failing, and why).
Check = Callable[[], "bool | str | Awaitable[bool | str]"]


async def retry_forever(what: str, op: Callable[[], Awaitable[T]], max_delay: float = 5.0) -> T:
    """Run `op` until it succeeds, with exponential backoff and jitter (tenacity), as long as it
    fails because of the infrastructure (`shared.retry.is_infrastructure`: Kafka, PostgreSQL,
    the network, a `TransientCondition`); logs each failure; returns what `op` returned. Any
    other error (a bug, a value refused) is raised at once, and cancellation is never retried.

    The first attempt runs without any retry machinery: this wraps every task and every batch
    on the hot paths, where a failure is rare and building a retry state each time cost about a
    fifth of the burst's throughput."""
    try:
        return await op()
    except Exception as exc:  # noqa: BLE001 - CancelledError is a BaseException: not caught
        if not is_infrastructure(exc):
            raise
        log.warning("%s failed (%s: %s); retrying", what, type(exc).__name__, exc)

    def log_failure(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s failed (%s: %s); retrying in %.1fs", what, type(exc).__name__, exc, delay)

    async def attempt() -> T:  # tenacity awaits only what it sees is a coroutine function
        return await op()

    await asyncio.sleep(0.2)
    retrying = AsyncRetrying(wait=wait_exponential_jitter(initial=0.4, max=max_delay, jitter=0.2),
                             retry=retry_if_exception(is_infrastructure), before_sleep=log_failure)
    return await retrying(attempt)


async def bounded(step: Awaitable[object], seconds: float, what: str) -> None:
    """Run a shutdown step for at most `seconds`: with Kafka or PostgreSQL unreachable, closing
    a client can wait for ever, and a process that will not exit on SIGTERM is worse than one
    that exits with work handed back (everything it did not commit is redelivered)."""
    try:
        async with asyncio.timeout(seconds):
            await step
    except TimeoutError:
        log.warning("%s did not finish in %.0fs; exiting anyway", what, seconds)
    except Exception as exc:  # noqa: BLE001 - shutting down regardless
        log.warning("%s failed during shutdown: %s", what, exc)


async def fetch_batch(consumer: AIOKafkaConsumer, service: str,
                      **options: Any) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
    """`consumer.getmany(...)`, but a fetch error (a broker restarting, a fenced member) is
    logged and answered with an empty batch: the loop goes on and the consumer recovers."""
    try:
        return dict(await consumer.getmany(**options))
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():  # this loop is being stopped
            raise
        # a CancelledError of aiokafka's own (one of its tasks was cancelled) would otherwise end
        # the loop as "cancelled", which looks like a shutdown: nobody would notice it stopped
        log.warning("%s: fetching records was cancelled inside aiokafka; retrying", service)
        await asyncio.sleep(0.5)
        return {}
    except Exception as exc:  # noqa: BLE001
        log.warning("%s: fetching records failed (%s: %s); retrying", service, type(exc).__name__, exc)
        await asyncio.sleep(0.5)
        return {}


def exit_if_it_dies(task: asyncio.Task[Any], what: str) -> None:
    """A loop that must run for ever and ended with an error takes the process down (SIGTERM
    to itself), so the supervisor restarts it, instead of a process that looks ready and does
    nothing."""
    def check(done: asyncio.Task[Any]) -> None:
        if done.cancelled() or done.exception() is None:
            return
        exit_process(f"{what} died", done.exception())
    task.add_done_callback(check)


def exit_process(what: str, exc: BaseException | None) -> None:
    """SIGTERM to this process, so the supervisor restarts it."""
    log.critical("%s: %r; exiting so that the supervisor restarts this process", what, exc)
    os.kill(os.getpid(), signal.SIGTERM)


async def retry_in_listener(what: str, op: Callable[[], Awaitable[T]]) -> T:
    """A rebalance listener's work, retried as `retry_forever` retries it. Any other error takes
    the process down: aiokafka only logs what a listener raises, and the consumer would go on
    without what the listener was loading (pending jobs, the view's stored offsets)."""
    try:
        return await retry_forever(what, op)
    except Exception as exc:  # noqa: BLE001 - CancelledError is a BaseException: not caught
        exit_process(f"{what} failed", exc)
        raise


class Runtime:
    """Connections of one service process and the state of their readiness."""

    def __init__(self, settings: CommonSettings, service: str) -> None:
        kafka_security(settings)  # a ValueError now, while the service is built: one line at start
        self.settings = settings
        self.service = service
        self.connected = asyncio.Event()
        self._connect_task: asyncio.Task[None] | None = None
        # Created in start(): aiokafka and psycopg objects belong to the running event loop.
        self._pool: AsyncConnectionPool | None = None
        self._producer: AIOKafkaProducer | None = None
        self._checks: dict[str, Check] = {}
        self._consumers: list[AIOKafkaConsumer] = []
        self._report_task: asyncio.Task[None] | None = None

    @property
    def pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise RuntimeError(f"{self.service}: the database pool is made in Runtime.start()")
        return self._pool

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError(f"{self.service}: the Kafka producer is made in Runtime.start()")
        return self._producer

    def add_check(self, name: str, check: Check) -> None:
        """A condition the service needs to do its job correctly, besides Kafka and PostgreSQL
        (e.g. its consumer has joined, the store master is loaded); `/readyz` names it."""
        self._checks[name] = check

    def track_consumer(self, consumer: AIOKafkaConsumer) -> None:
        """Report this consumer's lag (records behind the end of its partitions) on the timer."""
        self._consumers.append(consumer)

    def untrack_consumer(self, consumer: AIOKafkaConsumer) -> None:
        """A consumer replaced by a new one: no longer reported."""
        if consumer in self._consumers:
            self._consumers.remove(consumer)

    async def start(self) -> None:
        self._pool = make_pool(self.settings.database_url, self.settings.database_pool_max)
        self._producer = make_producer(self.settings, self.service)
        await self.pool.open(wait=False)
        set_health_probe(self.dependencies_ok)
        self._connect_task = asyncio.create_task(self._connect())
        exit_if_it_dies(self._connect_task, "connecting to Kafka and PostgreSQL")  # a bug, not an outage
        self._report_task = asyncio.create_task(self._report_forever())

    async def _report_forever(self) -> None:
        while True:
            try:
                await self.report()
            except Exception as exc:  # noqa: BLE001 - the next tick tries again
                log.warning("refreshing readiness and lag gauges failed: %s", exc)
            await asyncio.sleep(REPORT_EVERY_S)

    async def report(self) -> dict[str, bool]:
        """Refresh `imagejobs_ready` and the consumer lag gauges; returns the checks."""
        checks = await self.readiness()
        SERVICE_READY.labels(self.service).set(1 if all(checks.values()) else 0)
        lag: dict[str, int] = defaultdict(int)
        for consumer in self._consumers:
            for topic, behind in (await consumer_lag(consumer)).items():
                lag[topic] += behind
        for topic, behind in lag.items():
            CONSUMER_LAG.labels(self.service, topic).set(behind)
        return checks

    async def _connect(self) -> None:
        await retry_forever("database migrations", lambda: apply_migrations(self.settings.database_url))
        await retry_forever("creating Kafka topics", lambda: ensure_topics(self.settings))
        await retry_forever("starting the Kafka producer", self._start_producer)
        self.connected.set()
        log.info("%s connected to Kafka and PostgreSQL", self.service)

    async def _start_producer(self) -> None:
        try:
            await self.producer.start()
        except Exception:
            await self.producer.stop()
            self._producer = make_producer(self.settings, self.service)
            raise

    async def stop(self) -> None:
        for task in (self._connect_task, self._report_task):
            if task:
                task.cancel()
        if self.connected.is_set():
            await self.producer.stop()
        if self._pool is not None:
            await self._pool.close()

    async def database_ok(self) -> bool:
        try:
            async with self.pool.connection(timeout=1.0) as conn:
                await conn.execute("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False

    async def kafka_ok(self) -> bool:
        if not self.connected.is_set():
            return False
        try:
            await within(1.5, self.producer.client.fetch_all_metadata())
            return bool(self.producer.client.cluster.brokers())
        except Exception:  # noqa: BLE001
            return False

    async def dependencies_ok(self) -> bool:
        """Kafka and PostgreSQL both answer (the retry policy's health probe)."""
        return all(await asyncio.gather(self.kafka_ok(), self.database_ok()))

    async def readiness(self) -> dict[str, bool]:
        return (await self.readiness_details())[0]

    async def readiness_details(self) -> tuple[dict[str, bool], dict[str, str]]:
        """Each check's verdict, and the reasons the failing ones gave."""
        kafka, database = await asyncio.gather(self.kafka_ok(), self.database_ok())
        checks = {"kafka": kafka, "database": database}
        reasons: dict[str, str] = {}
        for name, check in self._checks.items():
            try:
                result = check()
                verdict = await result if inspect.isawaitable(result) else result
            except Exception as exc:  # noqa: BLE001 - a check that cannot answer is not passing
                verdict = f"the check failed: {type(exc).__name__}"
            checks[name] = verdict is True
            if isinstance(verdict, str):
                reasons[name] = verdict
        return checks, reasons


async def consumer_lag(consumer: AIOKafkaConsumer) -> dict[str, int]:
    """Per topic: records between the consumer's position and the end of each partition it
    owns (0 for a partition not fetched yet). For a processor this is the backlog waiting in
    Kafka, the number to scale on; tasks already fetched are in `/readyz`'s `in_flight`."""
    lag: dict[str, int] = defaultdict(int)
    for tp in consumer.assignment():
        end = consumer.highwater(tp)
        if end is None:
            continue
        try:
            position = await within(1.0, consumer.position(tp))
        except Exception:  # noqa: BLE001 - revoked or resetting: counted on the next tick
            continue
        lag[tp.topic] += max(0, end - position)
    return lag
