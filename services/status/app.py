"""The status API: `GET /api/status/{job_id}` (and `?jobid=`), per-image results, and the
projector that keeps the view.

Read-your-writes: ingest answers 200 only after `JobSubmitted` is in Kafka, so when a job is
not in the view yet, the request looks up the end offset of the job's partition and waits
(bounded) until the projector has folded past it: a status request right after a
successful submit never answers 404, and a truly unknown id costs one offset lookup.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any
from uuid import UUID

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse

from services.status.commands import Decisions, command_router
from services.status.domain import FAILED, first_error_per_store
from services.status.projector import CONSUMER, Projector
from services.status.settings import StatusSettings
from shared.auth import Unauthorized, parse_keys, request_owner
from shared.http import error, new_app
from shared.runtime import Runtime, bounded, exit_if_it_dies, ops_router, retry_forever

NOT_FOUND = "job not found"


def create_app(settings: StatusSettings) -> FastAPI:
    runtime = Runtime(settings, "status")
    projector = Projector(settings, runtime)
    clients: dict[str, AIOKafkaConsumer] = {}  # the offsets client, made inside the event loop
    keys = parse_keys(settings.api_keys)
    partitioner = DefaultPartitioner()
    decisions = Decisions(runtime)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        await projector.start()
        clients["offsets"] = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
            client_id="status-offsets", request_timeout_ms=5000)
        started = asyncio.create_task(_start_offsets())
        waiting = asyncio.create_task(decisions.run())
        exit_if_it_dies(waiting, "the command decisions poller")
        yield
        started.cancel()
        waiting.cancel()
        await bounded(projector.stop(), 15, "stopping the projector")
        await bounded(clients["offsets"].stop(), 5, "closing the offsets client")
        await bounded(runtime.stop(), 10, "closing connections")

    async def _start_offsets() -> None:
        await runtime.connected.wait()
        await retry_forever("starting the offsets client", clients["offsets"].start)

    app = new_app("imagejobs status", lifespan)
    app.include_router(ops_router(runtime))

    async def load_job(job_id: UUID) -> Any:
        async with runtime.pool.connection() as conn:
            return await (await conn.execute(
                "SELECT job_id, status, scheduled_time, total_images, succeeded, failed, owner"
                " FROM status_jobs WHERE job_id = %s AND submitted", (job_id,))).fetchone()

    async def wait_for_fold(job_id: UUID) -> Any:
        """Wait until the projector has folded the job's partition up to its current end."""
        topic = settings.topics.jobs
        parts = sorted(await runtime.producer.partitions_for(topic))
        tp = TopicPartition(topic, partitioner(str(job_id).encode(), parts, parts))
        end = (await clients["offsets"].end_offsets([tp]))[tp]
        deadline = time.monotonic() + settings.status_read_your_writes_wait_s
        while time.monotonic() < deadline:
            row = await load_job(job_id)
            if row is not None:
                return row
            async with runtime.pool.connection() as conn:
                folded = await (await conn.execute(
                    "SELECT next_offset FROM consumer_offsets WHERE consumer = %s AND topic = %s"
                    " AND partition = %s", (CONSUMER, tp.topic, tp.partition))).fetchone()
            if (folded[0] if folded else 0) >= end:  # no row: nothing folded yet (fine if end is 0)
                return await load_job(job_id)
            await asyncio.sleep(0.02)
        return None

    async def job_status(request: Request, raw_id: str | None) -> JSONResponse:
        try:
            owner = request_owner(request, keys)
        except Unauthorized:
            return error(401, "missing or invalid API key", {"WWW-Authenticate": "Bearer"})
        if not raw_id:
            return error(400, "jobid: required")
        try:
            job_id = UUID(raw_id)
        except ValueError:
            return error(400, "job_id: must be a UUID")
        if not runtime.connected.is_set():
            return error(503, "not connected yet; retry shortly", {"Retry-After": "1"})
        row = await load_job(job_id)
        if row is None:
            try:
                async with asyncio.timeout(settings.status_read_your_writes_wait_s + 1):
                    row = await wait_for_fold(job_id)
            except TimeoutError:  # Kafka did not answer the offset lookup: we cannot tell yet
                return error(503, "status not available yet; retry shortly", {"Retry-After": "1"})
        if row is None or (keys and row[6] != owner):
            return error(404, NOT_FOUND)
        _, status, scheduled, total, succeeded, failed, _ = row
        body: dict[str, Any] = {
            "job_id": str(job_id), "status": status,
            "scheduled_time": scheduled.isoformat().replace("+00:00", "Z"),
            "images": {"total": total, "succeeded": succeeded, "failed": failed,
                       "pending": max(0, total - succeeded - failed)},
        }
        if status == FAILED:
            async with runtime.pool.connection() as conn:
                rows = await (await conn.execute(
                    "SELECT store_id, visit_index, image_index, error FROM status_outcomes"
                    " WHERE job_id = %s AND NOT ok", (job_id,))).fetchall()
            body["error"] = first_error_per_store(rows)
        return JSONResponse(body)

    @app.get("/api/status/{job_id}")
    async def status_by_path(request: Request, job_id: str) -> JSONResponse:
        """A job's status: scheduled, ongoing, completed, failed (with per-store errors) or cancelled."""
        return await job_status(request, job_id)

    @app.get("/api/status")
    async def status_by_query(request: Request, jobid: Annotated[str | None, Query()] = None) -> JSONResponse:
        """The same, with the id as `?jobid=` (Retail Pulse clients)."""
        return await job_status(request, jobid)

    @app.get("/api/jobs/{job_id}/results")
    async def results(request: Request, job_id: str,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                      offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> JSONResponse:
        """Per-image results of a job, in visit and image order, paginated."""
        status = await job_status(request, job_id)
        if status.status_code != 200:
            return status
        async with runtime.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT task_id, store_id, image_url, ok, width, height, perimeter, error"
                " FROM status_outcomes WHERE job_id = %s ORDER BY visit_index, image_index"
                " LIMIT %s OFFSET %s", (UUID(job_id), limit, offset))).fetchall()
        items = [{"task_id": t, "store_id": s, "image_url": u, "status": "succeeded" if ok else "failed",
                  "width": w, "height": h, "perimeter": p, "error": e} for t, s, u, ok, w, h, p, e in rows]
        return JSONResponse({"job_id": job_id, "limit": limit, "offset": offset, "results": items})

    app.include_router(command_router(settings, runtime, decisions, job_status))
    return app
