"""The ingest API: `POST /processJob` (and aliases). The HTTP edge only: API key, content type
and body cap are checked here, then the submit use case (handlers.py, wired by bootstrap.py)
answers, and its answer or error becomes the HTTP response here."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import Counter
from starlette.routing import Route

from services.ingest.bootstrap import build
from services.ingest.domain import JobTooLarge, KeyReused, NotAccepted, OverQuota
from services.ingest.handlers import SubmitJob
from services.ingest.settings import IngestSettings
from shared.api import EXAMPLE_JOB, Accepted, JobIn, errors, model_response, request_body, webhook_callbacks
from shared.auth import ApiKeys, Unauthorized, request_tenant, warn_if_open
from shared.http import RETRY_SHORTLY, error, new_app, read_body_capped
from shared.metrics import latency_histogram
from shared.ops import ops_router
from shared.retention import start_retention
from shared.runtime import Runtime, bounded
from shared.schedule_time import InvalidInput

SUBMITS = Counter("imagejobs_ingest_requests_total", "Submit requests by outcome", ["outcome"])
SUBMIT_LATENCY = latency_histogram("imagejobs_ingest_latency_seconds", "Submit latency")
PATHS = ("/processJob", "/api/submit", "/api/submit/")


router = APIRouter(tags=["jobs"])


async def submit(request: Request) -> Response:
    """Submit a job (the body of docs/api.md): 200 with its id once Kafka has it; 400 naming the
    field; 413 over the size limit; 409 for an Idempotency-Key reused with another body; 429
    over a tenant quota (pending images, submit rate), with Retry-After."""
    started = time.perf_counter()
    edge: IngestEdge = request.app.state.edge
    response = await edge(request)
    SUBMITS.labels(str(response.status_code)).inc()
    SUBMIT_LATENCY.observe(time.perf_counter() - started)
    return response


SUBMIT_DOC = {**request_body(JobIn, EXAMPLE_JOB), "security": [{}, {"HTTPBearer": []}]}
for _path in PATHS:
    router.add_api_route(_path, submit, methods=["POST"], summary="Submit a job",
                         include_in_schema=_path == "/processJob", openapi_extra=SUBMIT_DOC,
                         callbacks=webhook_callbacks.routes,
                         responses={200: {"model": Accepted, "description": "Accepted: durably in Kafka"},
                                    **errors(400, 401, 409, 413, 415, 429, 503)})


@dataclass(frozen=True)
class IngestEdge:
    """The HTTP edge: API key (the job's owner is the key's tenant), content type and body
    size; then the use case."""

    submit_job: SubmitJob
    keys: ApiKeys
    max_body: int

    async def __call__(self, request: Request) -> Response:
        try:
            owner = request_tenant(request, self.keys)
        except Unauthorized:
            return error(401, "missing or invalid API key", {"WWW-Authenticate": "Bearer"})
        ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if ctype and ctype != "application/json" and not ctype.endswith("+json"):
            return error(415, f"content type must be application/json, not {ctype}")
        raw = await read_body_capped(request, self.max_body)
        if raw is None:
            return error(413, f"body exceeds the limit of {self.max_body} bytes")
        try:
            accepted = await self.submit_job(raw, owner, request.headers.get("idempotency-key"))
        except (InvalidInput, JobTooLarge, KeyReused, OverQuota, NotAccepted) as refused:
            return refusal(refused)
        return model_response(accepted)


def refusal(exc: Exception) -> JSONResponse:
    """A submit the use case refused, as its HTTP answer."""
    if isinstance(exc, InvalidInput):
        return error(400, str(exc))
    if isinstance(exc, JobTooLarge):
        return error(413, str(exc))
    if isinstance(exc, KeyReused):
        return error(409, "Idempotency-Key was used with a different body")
    if isinstance(exc, OverQuota):
        return error(429, str(exc), {"Retry-After": str(exc.refusal.retry_after_s)})
    return error(503, str(exc), RETRY_SHORTLY)  # NotAccepted: nothing will run, a retry may succeed


def create_app(settings: IngestSettings) -> FastAPI:
    """The ingest app; BadApiKeys or BadWebhookSecret (ValueErrors) when API_KEYS or
    WEBHOOK_SECRET cannot be read."""
    runtime = Runtime(settings, "ingest")
    ingest = build(settings, runtime)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        warn_if_open(ingest.keys, "ingest")
        await runtime.start()
        retention = start_retention(runtime, ingest.expiries)
        yield
        retention.cancel()
        await bounded(runtime.stop(), 10, "closing connections")

    app = new_app("imagejobs ingest", lifespan)
    app.state.edge = IngestEdge(ingest.submit_job, ingest.keys, settings.ingest_max_body_bytes)
    app.include_router(ops_router(runtime))
    app.include_router(router)
    # The same handler as plain Starlette routes, matched first: it reads the request itself (no
    # dependencies, no body model), so FastAPI's per-request machinery would be pure overhead on
    # the hottest route (about a third of its CPU under load). FastAPI's routes remain for the
    # OpenAPI document; the app's error handlers apply to both.
    app.router.routes[0:0] = [Route(path, submit, methods=["POST"]) for path in PATHS]
    return app
