"""The status API: `GET /api/status/{job_id}` (and `?jobid=`), per-image results, cancel and
reschedule, over the projector that keeps the view. Routes only: each asks a use case in
handlers/ and turns its `Reply` into a response; the wiring is `create_app`."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import Gauge
from sse_starlette import EventSourceResponse, ServerSentEvent

from services.status.adapters.kafka import CommandPublisher, EndOffsets
from services.status.adapters.retention import expired_jobs
from services.status.adapters.tenants import pending_by_owner
from services.status.adapters.view import ViewReader
from services.status.adapters.webhooks import WebhookSender, WebhookStore
from services.status.handlers.commands import Decisions, JobCommands
from services.status.handlers.jobs import Caller, JobReader
from services.status.handlers.progress import JobProgress, Opened, ProgressHub
from services.status.handlers.projector import Projector
from services.status.handlers.webhooks import MAX_IN_FLIGHT, RetryPolicy, WebhookDeliverer, WebhookReader
from services.status.settings import StatusSettings
from shared.api import BatchStatus, BatchStatusIn, ErrorBody, JobList, JobStatus, Results, WebhookStatus, errors
from shared.auth import ApiKeys, parse_api_keys, warn_if_open
from shared.http import error, new_app, read_body_capped, respond
from shared.kafka import kafka_security
from shared.metrics import tenant_label
from shared.ops import ops_router
from shared.retention import start_retention
from shared.runtime import Runtime, bounded, exit_if_it_dies
from shared.webhooks import parse_webhook_secret

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 16 * 1024
TENANT_PENDING = Gauge("imagejobs_tenant_pending_images", "Images accepted and not yet final, per tenant", ["tenant"])
TENANT_PENDING_EVERY_S = 5.0
router = APIRouter(tags=["jobs"])
bearer = HTTPBearer(auto_error=False, description="An API key from API_KEYS (when it is set)")


@dataclass(frozen=True)
class StatusUseCases:
    reader: JobReader
    commands: JobCommands
    keys: ApiKeys
    progress: JobProgress
    stream_heartbeat_s: float = 15.0
    stream_send_timeout_s: float = 30.0


class Unauthenticated(Exception):  # noqa: N818 - answered 401 by the app's handler
    pass


async def use_cases(request: Request) -> StatusUseCases:
    return request.app.state.use_cases  # type: ignore[no-any-return]


UseCases = Annotated[StatusUseCases, Depends(use_cases)]


async def caller(cases: UseCases,
                 credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller:
    """Who asks (their key's tenant); 401 when API keys are on and the bearer token is missing
    or unknown."""
    if not cases.keys.on:
        return Caller(None, keys_on=False)
    tenant = cases.keys.tenant_for(credentials.credentials if credentials else "")
    if tenant is None:
        raise Unauthenticated()
    return Caller(tenant, keys_on=True, legacy=cases.keys.owners_of(tenant) - {tenant})


Who = Annotated[Caller, Depends(caller)]


READ = errors(400, 401, 404, 503)


@router.get("/api/status/{job_id}", responses={200: {"model": JobStatus}, **READ})
async def status_by_path(job_id: str, cases: UseCases, who: Who) -> JSONResponse:
    """A job's status: scheduled, ongoing, completed, failed (with per-store errors) or cancelled."""
    return respond(await cases.reader.status(job_id, who))


@router.get("/api/status", responses={200: {"model": JobStatus}, **READ})
async def status_by_query(cases: UseCases, who: Who, jobid: Annotated[str | None, Query()] = None) -> JSONResponse:
    """The same, with the id as `?jobid=` (Retail Pulse clients)."""
    return respond(await cases.reader.status(jobid, who))


BATCH_MAX_BODY_BYTES = 128 * 1024  # 1,000 ids with room for spacing


@router.post("/api/status", responses={200: {"model": BatchStatus}, **errors(400, 401, 503)},
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": BatchStatusIn.model_json_schema(),
                 "example": {"job_ids": ["3f1c2a9e-1b2c-4d5e-8f90-123456789abc"]}}}}})
async def batch_status(request: Request, cases: UseCases, who: Who) -> JSONResponse:
    """Up to 1,000 jobs' statuses in one request (one view query): each as `GET
    /api/status/{id}` answers it, in the order asked; ids of no job of yours (unknown, or
    another tenant's) are listed in `not_found`."""
    body = await json_body(request, BATCH_MAX_BODY_BYTES, '{"job_ids": ["3f1c2a9e-1b2c-4d5e-8f90-123456789abc"]}')
    return body if isinstance(body, JSONResponse) else respond(await cases.reader.statuses(body, who))


async def json_body(request: Request, max_bytes: int, example: str) -> Any:
    """The request's JSON body, or the 400 to answer (too large, or not JSON)."""
    raw = await read_body_capped(request, max_bytes)
    if raw is None:
        return error(400, f"body: larger than {max_bytes} bytes")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return error(400, f"body: must be JSON, e.g. {example}")


STREAM_EXAMPLE = (
    'id: ongoing.1.0.2.2.2025-02-16T05:27:00Z\nevent: status\ndata: {"job_id": "3f1c2a9e-...", "status":'
    ' "ongoing", "images": {"total": 2, "succeeded": 1, ...}}\n\n: ping\n\n'
    'id: completed.2.0.2.2.2025-02-16T05:27:00Z\nevent: status\ndata: {"job_id": "3f1c2a9e-...", "status":'
    ' "completed", ...}\n\n')


@router.get("/api/jobs/{job_id}/events", response_class=Response, responses={
    200: {"description": "Server-Sent Events: an `event: status` with the job's whole status (the JSON of"
                         " `GET /api/status/{id}`) now and whenever it changes, the final one last, then the"
                         " stream ends; a `: ping` comment every STATUS_STREAM_HEARTBEAT_S keeps idle"
                         " proxies from closing it. Each event's `id` names what it showed: reconnect with"
                         " `Last-Event-ID` and you are sent the status only if it changed.",
          "content": {"text/event-stream": {"schema": {"type": "string"}, "example": STREAM_EXAMPLE}}},
    204: {"description": "`Last-Event-ID` is the job's final status: there is nothing more to send"},
    **errors(400, 401, 404, 503)})
async def job_events(job_id: str, cases: UseCases, who: Who,
                     last_event_id: Annotated[str | None, Header(max_length=200)] = None) -> Response:
    """Follow a job: its status as it changes, until final (Server-Sent Events)."""
    opened = await cases.progress.open(job_id, who, last_event_id)
    if not isinstance(opened, Opened):
        return respond(opened) if opened.status != 204 else Response(status_code=204)
    return EventSourceResponse(_as_sse(opened), ping=cases.stream_heartbeat_s,
                               send_timeout=cases.stream_send_timeout_s, headers={"Cache-Control": "no-store"},
                               shutdown_event=_OnShutdown(opened), shutdown_grace_period=1.0)  # type: ignore[arg-type]


class _OnShutdown:
    """What sse-starlette calls `set()` on when the server shuts down: the stream ends cleanly
    (a complete response; the client reconnects with Last-Event-ID) instead of being cut."""

    def __init__(self, opened: Opened) -> None:
        self._opened = opened

    def set(self) -> None:
        self._opened.close()


async def _as_sse(opened: Opened) -> AsyncIterator[ServerSentEvent]:
    async for event_id, status in opened.events:
        yield ServerSentEvent(data=json.dumps(status, separators=(",", ":")), event="status", id=event_id,
                              retry=1000)


@router.get("/api/jobs", responses={200: {"model": JobList}, **errors(400, 401, 503)})
async def list_jobs(cases: UseCases, who: Who, status: Annotated[str | None, Query()] = None,
                    limit: Annotated[int, Query(ge=1, le=200)] = 50,
                    cursor: Annotated[str | None, Query(max_length=200)] = None) -> JSONResponse:
    """Jobs, newest first (only your tenant's when API keys are on), optionally of one status;
    `next_cursor` fetches the next page (keyset pagination: stable while jobs arrive)."""
    return respond(await cases.reader.list(who, status, limit, cursor))


@router.get("/api/jobs/{job_id}/results", responses={200: {"model": Results}, **READ})
async def results(job_id: str, cases: UseCases, who: Who,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> JSONResponse:
    """Per-image results of a job, in visit and image order, paginated."""
    return respond(await cases.reader.results(job_id, who, limit, offset))


def create_app(settings: StatusSettings) -> FastAPI:
    """The status app; BadApiKeys or BadWebhookSecret (ValueErrors) when API_KEYS or
    WEBHOOK_SECRET cannot be read."""
    keys = parse_api_keys(settings.api_keys)
    runtime = Runtime(settings, "status")
    webhooks = CompletionWebhooks(settings, runtime)
    reads = ViewReader(runtime)
    hub = ProgressHub(reads, settings.status_stream_poll_s, settings.status_max_streams)
    projector = Projector(settings, runtime, webhooks_due=webhooks.wake, jobs_folded=hub.nudge)
    expiries = [expired_jobs(runtime, settings.topics.status, settings.job_retention_s)]
    offsets = EndOffsets(settings.kafka_bootstrap_servers, settings.topics.jobs, kafka_security(settings))
    decisions = Decisions(reads)
    reader = JobReader(reads, lambda job_ids: offsets.ends_of(runtime.producer, job_ids),
                       runtime.connected.is_set, settings.status_read_your_writes_wait_s)
    commands = JobCommands(reader, CommandPublisher(runtime, settings.topics.jobs, settings.ingest_publish_timeout_s),
                           decisions, ZoneInfo(settings.default_timezone), settings.ingest_max_schedule_days,
                           settings.status_command_wait_s, settings.status_read_your_writes_wait_s)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        warn_if_open(keys, "status")
        await runtime.start()
        await projector.start()
        await webhooks.start(runtime)
        background = [asyncio.create_task(_after_connected(runtime, offsets.start)),
                      asyncio.create_task(decisions.run()),
                      asyncio.create_task(_export_tenant_pending(runtime, keys)),
                      asyncio.create_task(hub.run()),
                      start_retention(runtime, expiries)]
        exit_if_it_dies(background[1], "the command decisions poller")
        exit_if_it_dies(background[3], "the progress streams' poller")
        yield
        for task in background:
            task.cancel()
        await bounded(projector.stop(), 15, "stopping the projector")
        await bounded(webhooks.stop(), 5, "stopping the webhook deliveries")
        await bounded(offsets.stop(), 5, "closing the offsets client")
        await bounded(runtime.stop(), 10, "closing connections")

    app = new_app("imagejobs status", lifespan)
    app.state.use_cases = StatusUseCases(reader, commands, keys, JobProgress(reader, reads, hub),
                                         settings.status_stream_heartbeat_s, settings.status_stream_send_timeout_s)
    app.add_exception_handler(Unauthenticated, _unauthenticated)
    app.include_router(ops_router(runtime))
    app.include_router(router)
    app.include_router(command_router)
    app.state.webhooks = WebhookReader(reader, webhooks.store)
    app.include_router(webhook_router)
    return app


async def _after_connected(runtime: Runtime, start: Any) -> None:
    await runtime.connected.wait()
    await start()


async def _export_tenant_pending(runtime: Runtime, keys: ApiKeys) -> None:
    """Refresh `imagejobs_tenant_pending_images` on a timer (one grouped query). Jobs recorded
    under a legacy key hash count for that key's tenant; without auth, all for one (`none`); a
    tenant whose jobs all finished reads 0 rather than its last value."""
    await runtime.connected.wait()
    shown: set[str] = set()
    while True:
        try:
            totals: dict[str, int] = defaultdict(int)
            for owner, images in await pending_by_owner(runtime):
                tenant = keys.tenant_of_owner(owner) if keys.on and owner else None
                totals[tenant_label(tenant)] += images
            for label in shown | totals.keys():
                TENANT_PENDING.labels(label).set(totals.get(label, 0))
            shown |= totals.keys()
        except Exception as exc:  # noqa: BLE001 - the next tick tries again
            log.warning("refreshing the tenant pending images gauge failed: %s", exc)
        await asyncio.sleep(TENANT_PENDING_EVERY_S)


async def _unauthenticated(_: Request, __: Exception) -> JSONResponse:
    return error(401, "missing or invalid API key", {"WWW-Authenticate": "Bearer"})


# -- cancel and reschedule ----------------------------------------------------------------
command_router = APIRouter(tags=["jobs"])
_ERROR = {"model": ErrorBody}
ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "Accepted by the job's release owner; reads now reflect it",
          "content": {"application/json": {"example": {
              "job_id": "3f1c2a9e-1b2c-4d5e-8f90-123456789abc", "status": "cancelled",
              "scheduled_time": "2025-02-16T05:27:00Z"}}}},
    400: {"description": "Malformed id (or, for a reschedule, a bad body)", **_ERROR},
    401: {"description": "Missing or invalid API key (when API_KEYS is set)", **_ERROR},
    404: {"description": "No such job (or another tenant's)", **_ERROR},
    409: {"description": "Refused: the job is already released (ongoing, completed, failed) or cancelled;"
                         " the message names its status", **_ERROR},
    503: {"description": "Kafka or PostgreSQL unavailable: nothing changed, retry", **_ERROR},
    504: {"description": "No decision within STATUS_COMMAND_WAIT_S: the command stays queued; repeat"
                         " the request to learn the decision", **_ERROR},
}
RESCHEDULE_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"type": "object", "required": ["scheduled_time"], "properties": {"scheduled_time": {
        "type": "string", "format": "date-time",
        "description": "ISO-8601; naive times are in DEFAULT_TIMEZONE; a past time means now"}}},
    "example": {"scheduled_time": "2025-02-16T10:57:00+05:30"}}}}}


@command_router.delete("/api/jobs/{job_id}", responses=ANSWERS)
async def cancel(job_id: str, cases: UseCases, who: Who) -> JSONResponse:
    """Cancel a job that has not been released: 200 `cancelled` (never released: no task, no
    result), or 409 naming the status the job is already in. Decided by the job's release owner."""
    return respond(await cases.commands.cancel(job_id, who))


@command_router.patch("/api/jobs/{job_id}", responses=ANSWERS, openapi_extra=RESCHEDULE_BODY)
async def reschedule(request: Request, job_id: str, cases: UseCases, who: Who) -> JSONResponse:
    """Move a job that has not been released to a new `scheduled_time` (the same rules as
    submit: offset honoured, naive in DEFAULT_TIMEZONE, past means now): 200 with the new
    time, or 409 naming the status the job is already in."""
    body = await json_body(request, MAX_BODY_BYTES, '{"scheduled_time": "2025-02-16T10:57:00+05:30"}')
    return body if isinstance(body, JSONResponse) else respond(await cases.commands.reschedule(job_id, who, body))


# -- completion webhooks (handlers/webhooks.py) -------------------------------------------
webhook_router = APIRouter(tags=["jobs"])


async def webhook_reader(request: Request) -> WebhookReader:
    return request.app.state.webhooks  # type: ignore[no-any-return]


@webhook_router.get("/api/jobs/{job_id}/webhook", responses={200: {"model": WebhookStatus}, **READ})
async def webhook(job_id: str, reader: Annotated[WebhookReader, Depends(webhook_reader)], who: Who) -> JSONResponse:
    """The job's completion webhook: where it goes, its `webhook-id`, its state (`waiting` until
    the job is final, then `pending`, `delivered` or `failed`) and every attempt. 404 for a job
    without a `callback_url`, as for another tenant's job."""
    return respond(await reader.webhook(job_id, who))


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
        self._task = asyncio.create_task(_after_connected(runtime, self.deliverer.run))
        exit_if_it_dies(self._task, "the webhook deliveries")

    async def stop(self) -> None:
        if self._task is None or self.deliverer is None:
            return
        self._task.cancel()
        await self.deliverer.stop()
        await self.sender.close()
