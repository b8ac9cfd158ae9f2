"""The status service's composition root: `build(settings)` makes the adapters (the view, the
Kafka clients, the webhook table and sender, the projector) and hands them to the use cases as
their ports. The only module that imports both adapters/ and handlers/; app.py serves what it
returns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from uuid import UUID
from zoneinfo import ZoneInfo

from services.status.adapters.kafka import CommandPublisher, EndOffsets
from services.status.adapters.projector import Projector
from services.status.adapters.retention import expired_jobs
from services.status.adapters.tenants import pending_by_owner
from services.status.adapters.view import ViewReader
from services.status.adapters.webhooks import WebhookSender, WebhookStore
from services.status.domain import FoldCoverage
from services.status.handlers.commands import Decisions, JobCommands
from services.status.handlers.jobs import JobReader
from services.status.handlers.progress import JobProgress, ProgressHub
from services.status.handlers.read_cache import ReadCache
from services.status.handlers.tenants import export_tenant_pending
from services.status.handlers.webhooks import MAX_IN_FLIGHT, RetryPolicy, WebhookDeliverer, WebhookReader
from services.status.settings import StatusSettings
from shared.auth import ApiKeys, parse_api_keys, warn_if_open
from shared.kafka import kafka_security
from shared.retention import start_retention
from shared.runtime import Runtime, bounded, exit_if_it_dies
from shared.webhooks import parse_webhook_secret


@dataclass(frozen=True)
class StatusUseCases:
    """What the routes call: built once, kept on `app.state`."""

    reader: JobReader
    commands: JobCommands
    progress: JobProgress
    webhooks: WebhookReader
    keys: ApiKeys


@dataclass(frozen=True)
class StatusService:
    use_cases: StatusUseCases
    runtime: Runtime  # the ops routes (health, metrics) report on it
    lifespan: Background


def build(settings: StatusSettings) -> StatusService:
    """The status service, wired; BadApiKeys or BadWebhookSecret (ValueErrors) when API_KEYS or
    WEBHOOK_SECRET cannot be read."""
    keys = parse_api_keys(settings.api_keys)
    runtime = Runtime(settings, "status")
    webhooks = CompletionWebhooks(settings, runtime)
    reads = ViewReader(runtime)
    coverage = FoldCoverage()  # the projector keeps it; the hub and the cache rely on it
    hub = ProgressHub(reads, settings.status_stream_poll_s, settings.status_max_streams, coverage)
    cache = ReadCache(reads, coverage, settings.status_read_cache_jobs, settings.status_read_cache_age_s)
    offsets = EndOffsets(settings.kafka_bootstrap_servers, settings.topics.jobs, kafka_security(settings))
    decisions = Decisions(reads)
    reader = JobReader(reads, lambda job_ids: offsets.ends_of(runtime.producer, job_ids),
                       runtime.connected.is_set, settings.status_read_your_writes_wait_s, cache)
    commands = JobCommands(reader, CommandPublisher(runtime, settings.topics.jobs, settings.ingest_publish_timeout_s),
                           decisions, ZoneInfo(settings.default_timezone), settings.ingest_max_schedule_days,
                           settings.status_command_wait_s, settings.status_read_your_writes_wait_s)
    progress = JobProgress(reader, reads, hub, settings.status_stream_min_gap_s, settings.status_stream_heartbeat_s)
    use_cases = StatusUseCases(reader, commands, progress, WebhookReader(reader, webhooks.store), keys)
    background = Background(settings, runtime, keys, webhooks, Followers(hub, cache, coverage), offsets, decisions)
    return StatusService(use_cases, runtime, background)


@dataclass(frozen=True)
class Followers:
    """What follows the fold's commits in memory: the progress streams and the status reads."""

    hub: ProgressHub
    cache: ReadCache
    coverage: FoldCoverage

    def folding(self, job_ids: set[UUID]) -> None:
        self.cache.folding(job_ids)

    def folded(self, job_ids: set[UUID]) -> None:
        self.cache.folded(job_ids)
        self.hub.nudge(job_ids)

    def moved(self) -> None:
        self.cache.clear()
        self.hub.moved()


class Background:
    """The service's life: start the runtime, the projector, the webhook loop and the pollers;
    stop them in order (`async with` it, or hand it to FastAPI as the lifespan)."""

    def __init__(self, settings: StatusSettings, runtime: Runtime, keys: ApiKeys, webhooks: CompletionWebhooks,
                 followers: Followers, offsets: EndOffsets, decisions: Decisions) -> None:
        self.settings, self.runtime, self.keys, self.webhooks = settings, runtime, keys, webhooks
        self.hub, self.cache, self.offsets, self.decisions = followers.hub, followers.cache, offsets, decisions
        self.projector = Projector(settings, runtime, webhooks_due=webhooks.wake, jobs_folded=followers.folded,
                                   jobs_folding=followers.folding,
                                   coverage=followers.coverage, fold_moved=followers.moved)

    def _start_tasks(self) -> list[asyncio.Task[None]]:
        runtime = self.runtime
        expiries = [expired_jobs(runtime, self.settings.topics.status, self.settings.job_retention_s)]
        tasks = [asyncio.create_task(after_connected(runtime, self.offsets.start)),
                 asyncio.create_task(self.decisions.run()),
                 asyncio.create_task(export_tenant_pending(runtime.connected.wait, lambda: pending_by_owner(runtime),
                                                           self.keys)),
                 asyncio.create_task(self.hub.run()),
                 start_retention(runtime, expiries),
                 asyncio.create_task(self.cache.run())]
        exit_if_it_dies(tasks[0], "the read-your-writes offsets client's start")
        exit_if_it_dies(tasks[1], "the command decisions poller")
        exit_if_it_dies(tasks[3], "the progress streams' poller")
        exit_if_it_dies(tasks[5], "the status read cache's refresh")
        return tasks

    @asynccontextmanager
    async def __call__(self, _: object = None) -> AsyncIterator[None]:
        warn_if_open(self.keys, "status")
        await self.runtime.start()
        await self.projector.start()
        await self.webhooks.start(self.runtime)
        tasks = self._start_tasks()
        yield
        for task in tasks:
            task.cancel()
        await bounded(self.projector.stop(), 15, "stopping the projector")
        await bounded(self.webhooks.stop(), 5, "stopping the webhook deliveries")
        await bounded(self.offsets.stop(), 5, "closing the offsets client")
        await bounded(self.runtime.stop(), 10, "closing connections")


async def after_connected(runtime: Runtime, start: Callable[[], Awaitable[None]]) -> None:
    await runtime.connected.wait()
    await start()


class CompletionWebhooks:
    """The deliveries table, and, when WEBHOOK_SECRET is set, the loop that sends them."""

    def __init__(self, settings: StatusSettings, runtime: Runtime) -> None:
        signer = parse_webhook_secret(settings.webhook_secret)  # BadWebhookSecret: the service does not start
        self.store = WebhookStore(runtime)
        self.sender = WebhookSender(settings.webhook_timeout_s, settings.webhook_allow_private_networks, MAX_IN_FLIGHT)
        policy = RetryPolicy(settings.webhook_retry_for_s, settings.webhook_retry_base_s, settings.webhook_retry_max_s)
        self.deliverer = (None if signer is None
                          else WebhookDeliverer(self.store, ViewReader(runtime), self.sender, signer, policy))
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        if self.deliverer is not None:
            self.deliverer.wake()

    async def start(self, runtime: Runtime) -> None:
        if self.deliverer is None:
            return
        await self.sender.start()
        self._task = asyncio.create_task(after_connected(runtime, self.deliverer.run))
        exit_if_it_dies(self._task, "the webhook deliveries")

    async def stop(self) -> None:
        if self._task is None or self.deliverer is None:
            return
        self._task.cancel()
        await self.deliverer.stop()
        await self.sender.close()
