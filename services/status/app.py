"""The status API: `GET /api/status/{job_id}` (and `?jobid=`), per-image results, cancel and
reschedule, progress streams and completion webhooks, over the projector that keeps the view.
FastAPI wiring only: each route asks a use case (handlers/, wired by bootstrap.py) and writes
the API model it answers (shared/api.py); the use cases' refusals become HTTP errors here
(`REFUSALS`)."""

from __future__ import annotations

import inspect
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from services.status.bootstrap import StatusUseCases, build
from services.status.domain import Caller, CommandRefused, CommandUndecided, JobNotFound, RetryShortly
from services.status.settings import StatusSettings
from services.status.sse import ProgressStreamResponse
from shared.api import (
    BatchStatus,
    BatchStatusIn,
    ErrorBody,
    JobChanged,
    JobList,
    JobStatus,
    RescheduleIn,
    Results,
    WebhookStatus,
    errors,
    model_response,
    request_body,
)
from shared.auth import Unauthorized, request_tenant
from shared.http import RETRY_SHORTLY, error, new_app, read_body_capped
from shared.ops import ops_router
from shared.schedule_time import InvalidInput
from shared.serve import on_drain

MAX_BODY_BYTES = 16 * 1024
router = APIRouter(tags=["jobs"])
bearer = HTTPBearer(auto_error=False, description="An API key from API_KEYS (when it is set)")


async def use_cases(request: Request) -> StatusUseCases:
    cases: StatusUseCases = request.app.state.use_cases
    return cases


UseCases = Annotated[StatusUseCases, Depends(use_cases)]


async def caller(request: Request, cases: UseCases,
                 _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller:
    """Who asks (their key's tenant); 401 when API keys are on and the bearer token is missing
    or unknown. The header is read by `shared.auth.request_tenant`, as ingest and the status
    read shortcut read it; `bearer` declares the scheme for the API document."""
    return caller_for(cases, request)


def caller_for(cases: StatusUseCases, request: Request) -> Caller:
    """The caller the request's bearer token makes; Unauthorized when API keys are on and it is
    missing or unknown."""
    tenant = request_tenant(request, cases.keys)
    if tenant is None:
        return Caller(None, keys_on=False)
    return Caller(tenant, keys_on=True, legacy=cases.keys.owners_of(tenant) - {tenant})


Who = Annotated[Caller, Depends(caller)]


READ = errors(400, 401, 404, 503)


@router.get("/api/status/{job_id}", responses={200: {"model": JobStatus}, **READ})
async def status_by_path(job_id: str, cases: UseCases, who: Who) -> Response:
    """A job's status: scheduled, ongoing, completed, failed (with per-store errors) or cancelled."""
    return model_response(await cases.reader.status(job_id, who))


@router.get("/api/status", responses={200: {"model": JobStatus}, **READ})
async def status_by_query(cases: UseCases, who: Who, jobid: Annotated[str | None, Query()] = None) -> Response:
    """The same, with the id as `?jobid=` (Retail Pulse clients)."""
    return model_response(await cases.reader.status(jobid, who))


BATCH_MAX_BODY_BYTES = 128 * 1024  # 1,000 ids with room for spacing
BATCH_EXAMPLE = {"job_ids": ["3f1c2a9e-1b2c-4d5e-8f90-123456789abc"]}


@router.post("/api/status", responses={200: {"model": BatchStatus}, **errors(400, 401, 503)},
             openapi_extra=request_body(BatchStatusIn, BATCH_EXAMPLE))
async def batch_status(request: Request, cases: UseCases, who: Who) -> Response:
    """Up to 1,000 jobs' statuses in one request (one view query): each as `GET
    /api/status/{id}` answers it, in the order asked; ids of no job of yours (unknown, or
    another tenant's) are listed in `not_found`."""
    body = await json_body(request, BATCH_MAX_BODY_BYTES, json.dumps(BATCH_EXAMPLE))
    return model_response(await cases.reader.statuses(body, who))


async def json_body(request: Request, max_bytes: int, example: str) -> Any:
    """The request's JSON body; InvalidInput (400) when too large, or not JSON."""
    raw = await read_body_capped(request, max_bytes)
    if raw is None:
        raise InvalidInput(f"body: larger than {max_bytes} bytes")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidInput(f"body: must be JSON, e.g. {example}") from None


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
    if opened is None:
        return Response(status_code=204)
    return ProgressStreamResponse(opened)


@router.get("/api/jobs", responses={200: {"model": JobList}, **errors(400, 401, 503)})
async def list_jobs(cases: UseCases, who: Who, status: Annotated[str | None, Query()] = None,
                    limit: Annotated[int, Query(ge=1, le=200)] = 50,
                    cursor: Annotated[str | None, Query(max_length=200)] = None) -> Response:
    """Jobs, newest first (only your tenant's when API keys are on), optionally of one status;
    `next_cursor` fetches the next page (keyset pagination: stable while jobs arrive)."""
    return model_response(await cases.reader.jobs(who, status, limit, cursor))


@router.get("/api/jobs/{job_id}/results", responses={200: {"model": Results}, **READ})
async def results(job_id: str, cases: UseCases, who: Who,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> Response:
    """Per-image results of a job, in visit and image order, paginated."""
    return model_response(await cases.reader.results(job_id, who, limit, offset))


# -- cancel, reschedule and the completion webhook ----------------------------------------
command_router = APIRouter(tags=["jobs"])
_ERROR = {"model": ErrorBody}
ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "Accepted by the job's release owner; reads now reflect it", "model": JobChanged,
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
RESCHEDULE_EXAMPLE = {"scheduled_time": "2025-02-16T10:57:00+05:30"}


@command_router.delete("/api/jobs/{job_id}", responses=ANSWERS)
async def cancel(job_id: str, cases: UseCases, who: Who) -> Response:
    """Cancel a job that has not been released: 200 `cancelled` (never released: no task, no
    result), or 409 naming the status the job is already in. Decided by the job's release owner."""
    return model_response(await cases.commands.cancel(job_id, who))


@command_router.patch("/api/jobs/{job_id}", responses=ANSWERS,
                      openapi_extra=request_body(RescheduleIn, RESCHEDULE_EXAMPLE))
async def reschedule(request: Request, job_id: str, cases: UseCases, who: Who) -> Response:
    """Move a job that has not been released to a new `scheduled_time` (the same rules as
    submit: offset honoured, naive in DEFAULT_TIMEZONE, past means now): 200 with the new
    time, or 409 naming the status the job is already in."""
    body = await json_body(request, MAX_BODY_BYTES, json.dumps(RESCHEDULE_EXAMPLE))
    return model_response(await cases.commands.reschedule(job_id, who, body))


@command_router.get("/api/jobs/{job_id}/webhook", responses={200: {"model": WebhookStatus}, **READ})
async def webhook(job_id: str, cases: UseCases, who: Who) -> Response:
    """The job's completion webhook: where it goes, its `webhook-id`, its state (`waiting` until
    the job is final, then `pending`, `delivered` or `failed`) and every attempt. 404 for a job
    without a `callback_url`, as for another tenant's job."""
    return model_response(await cases.webhooks.webhook(job_id, who))


# -- refusals as HTTP: every one `{"error": message}` -------------------------------------
REFUSALS: dict[type[Exception], int] = {InvalidInput: 400, JobNotFound: 404, CommandRefused: 409,
                                         RetryShortly: 503, CommandUndecided: 504}


async def _refused(_: Request, exc: Exception) -> Response:
    status = next(code for kind, code in REFUSALS.items() if isinstance(exc, kind))
    return error(status, str(exc), RETRY_SHORTLY if status == 503 else None)


async def _unauthorized(_: Request, __: Exception) -> Response:
    return error(401, "missing or invalid API key", {"WWW-Authenticate": "Bearer"})


class StatusReadShortcut:
    """`GET /api/status/{job_id}` answered without FastAPI's routing, dependency solving and
    exception middleware: the same use case and caller, and a failure answered in place by the
    app's own exception handler for it (400, 401, 404, 503: `REFUSALS`, `Unauthorized` and
    shared/http.py's), or, with none, raised to the server error middleware outside, which
    logs it and answers 500 as for any route. A client polling its jobs asks this more than
    everything else together; in `make bench`'s polled burst the status process spent 164 µs
    per read through the route and 59 µs here (docs/benchmarks.md). Every other request, and
    any request under a `root_path` (the router strips it before matching; this does not try),
    goes to the app. The route stays declared: the API document, and `?jobid=` reads, use it."""

    PREFIX = "/api/status/"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" and scope["method"] == "GET" else ""
        job_id = path[len(self.PREFIX):] if path.startswith(self.PREFIX) and not scope.get("root_path") else ""
        cases: StatusUseCases | None = getattr(scope["app"].state, "use_cases", None) if job_id else None
        if not job_id or "/" in job_id or cases is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            answer = model_response(await cases.reader.status(job_id, caller_for(cases, request)))
        except Exception as exc:
            handler = _handler_for(scope["app"].exception_handlers, exc)
            if handler is None:
                raise  # ServerErrorMiddleware: the app's 500, logged
            answer = handler(request, exc)
            if inspect.isawaitable(answer):
                answer = await answer
        await answer(scope, receive, send)


def _handler_for(handlers: dict[Any, Any], exc: Exception) -> Any:
    """The handler the app's exception middleware would give `exc` (the nearest of its classes;
    the 500 handler for `Exception` belongs to the server error middleware, not to this one)."""
    return next((handlers[kind] for kind in type(exc).__mro__ if kind in handlers and kind is not Exception), None)


def create_app(settings: StatusSettings) -> FastAPI:
    """The status app over the service `bootstrap.build` wires; BadApiKeys or BadWebhookSecret
    (ValueErrors) when API_KEYS or WEBHOOK_SECRET cannot be read."""
    service = build(settings)
    app = new_app("imagejobs status", service.lifespan)
    app.state.use_cases = service.use_cases
    on_drain(app, service.lifespan.hub.drain)  # open streams end cleanly as the server shuts down
    app.add_exception_handler(Unauthorized, _unauthorized)
    for kind in REFUSALS:
        app.add_exception_handler(kind, _refused)
    app.add_middleware(StatusReadShortcut)
    app.include_router(ops_router(service.runtime))
    app.include_router(router)
    app.include_router(command_router)
    return app
