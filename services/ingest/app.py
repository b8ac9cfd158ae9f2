"""The ingest API: `POST /processJob` (and aliases) validates a job and publishes `JobSubmitted`.

A job is accepted (200) only after the broker acknowledged its event (`acks=all`); with an
`Idempotency-Key`, a retry returns the same `job_id` and re-publishes the same event (the
consumers ignore repeats), so a submit whose acknowledgement was lost is never duplicated.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from uuid import uuid4
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from starlette.routing import Route

from services.ingest.domain import InvalidSubmission, Limits, validate_submission
from services.ingest.settings import IngestSettings
from shared.auth import Unauthorized, parse_keys, request_owner
from shared.events import JobSubmitted, encode_event
from shared.http import error, new_app, read_body_capped
from shared.kafka import MAX_MESSAGE_BYTES
from shared.metrics import latency_histogram
from shared.runtime import Runtime, bounded, ops_router

log = logging.getLogger(__name__)
SUBMITS = Counter("imagejobs_ingest_requests_total", "Submit requests by outcome", ["outcome"])
SUBMIT_LATENCY = latency_histogram("imagejobs_ingest_latency_seconds", "Submit latency")
IMAGES_ACCEPTED = Counter("imagejobs_ingest_images_total", "Images in accepted jobs")


def create_app(settings: IngestSettings) -> FastAPI:
    runtime = Runtime(settings, "ingest")
    tz = ZoneInfo(settings.default_timezone)
    limits = Limits(settings.ingest_max_images, settings.ingest_max_schedule_days)
    keys = parse_keys(settings.api_keys)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        yield
        await bounded(runtime.stop(), 10, "closing connections")

    app = new_app("imagejobs ingest", lifespan)
    app.include_router(ops_router(runtime))

    async def submit(request: Request) -> JSONResponse:
        started = time.perf_counter()
        response = await _submit(request)
        SUBMITS.labels(str(response.status_code)).inc()
        SUBMIT_LATENCY.observe(time.perf_counter() - started)
        return response

    async def _submit(request: Request) -> JSONResponse:
        try:
            owner = request_owner(request, keys)
        except Unauthorized:
            return error(401, "missing or invalid API key", {"WWW-Authenticate": "Bearer"})
        ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if ctype and ctype != "application/json" and not ctype.endswith("+json"):
            return error(415, f"content type must be application/json, not {ctype}")
        raw = await read_body_capped(request, settings.ingest_max_body_bytes)
        if raw is None:
            return error(413, f"body exceeds the limit of {settings.ingest_max_body_bytes} bytes")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            return error(400, "body is not valid JSON")
        try:
            job = validate_submission(body, datetime.now(UTC), tz, limits)
        except InvalidSubmission as exc:
            return error(400, str(exc))
        except RecursionError:
            return error(400, "body is nested too deeply")
        event = JobSubmitted(job_id=uuid4(), scheduled_time=job.scheduled_time, visits=job.visits, owner=owner)
        payload = encode_event(event)
        if len(payload) > MAX_MESSAGE_BYTES - 64 * 1024:
            return error(413, "job too large to store as one event; split it into smaller jobs")
        if not runtime.connected.is_set():
            return error(503, "not connected to Kafka yet; retry shortly", {"Retry-After": "1"})
        key = request.headers.get("idempotency-key")
        if key is not None:
            try:
                first = await _remember_key(runtime, key, raw, event, owner)
                if first is not event:  # a retry: re-publish the event stored the first time
                    event, payload = first, encode_event(first)
            except KeyReused:
                return error(409, "Idempotency-Key was used with a different body")
            except Exception:  # noqa: BLE001 - database down
                log.warning("idempotency store unavailable", exc_info=True)
                return error(503, "idempotency store unavailable; retry shortly", {"Retry-After": "1"})
        try:
            await asyncio.wait_for(
                runtime.producer.send_and_wait(settings.topics.jobs, payload, key=str(event.job_id).encode()),
                settings.ingest_publish_timeout_s)
        except Exception:  # noqa: BLE001 - not acknowledged: not accepted
            log.warning("publishing job %s failed", event.job_id, exc_info=True)
            return error(503, "the job could not be stored; retry (with the same Idempotency-Key)",
                         {"Retry-After": "1"})
        IMAGES_ACCEPTED.inc(event.total_images)
        return JSONResponse({
            "job_id": str(event.job_id),
            "message": "Job scheduled for processing",
            "scheduled_time": _iso(event.scheduled_time),
        })

    paths = ("/processJob", "/api/submit", "/api/submit/")
    for path in paths:
        app.add_api_route(path, submit, methods=["POST"], summary="Submit a job",
                          include_in_schema=path == "/processJob")
    # The same handler as plain Starlette routes, matched first: it reads the request itself (no
    # dependencies, no body model), so FastAPI's per-request machinery would be pure overhead on
    # the hottest route (about a third of its CPU under load). FastAPI's routes remain for the
    # OpenAPI document; the app's error handlers apply to both.
    app.router.routes[0:0] = [Route(path, submit, methods=["POST"]) for path in paths]
    return app


class KeyReused(Exception):
    pass


async def _remember_key(runtime: Runtime, key: str, raw: bytes, event: JobSubmitted,
                        owner: str | None) -> JobSubmitted:
    """Store key -> event, or return the event first stored under this key."""
    scoped = hashlib.sha256(f"{owner or ''}:{key}".encode()).hexdigest()
    digest = hashlib.sha256(raw).hexdigest()
    async with runtime.pool.connection() as conn:
        row = await (await conn.execute(
            "INSERT INTO ingest_idempotency_keys (key, job_id, event) VALUES (%s, %s, %s)"
            " ON CONFLICT (key) DO NOTHING RETURNING job_id",
            (scoped, event.job_id, json.dumps({"body_sha256": digest, "event": event.model_dump(mode="json")})),
        )).fetchone()
        if row is not None:
            return event
        stored = await (await conn.execute(
            "SELECT event FROM ingest_idempotency_keys WHERE key = %s", (scoped,))).fetchone()
    assert stored is not None
    if stored[0]["body_sha256"] != digest:
        raise KeyReused()
    return JobSubmitted.model_validate(stored[0]["event"])


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")

