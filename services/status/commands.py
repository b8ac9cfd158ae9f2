"""Cancel (`DELETE /api/jobs/{id}`) and reschedule (`PATCH /api/jobs/{id}`): commands the
status API forwards to the job's release owner, answering with its decision.

The API does not decide: a job's fate is decided by the scheduler instance that would release
it, in order with the release (services/scheduler/adapters/commands.py). The API publishes the command
on the jobs topic (keyed by job_id, so it follows the job's own events), then waits until the
projector has folded the decision into the view; the view and the decision are written in one
transaction, so a read after the answer reflects it. While any command is waited for, one
poller per process looks all of them up together every few milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.status.settings import StatusSettings
from shared.events import Event, JobCancelRequested, JobRescheduleRequested, encode_event
from shared.http import error, read_body_capped
from shared.runtime import Runtime
from shared.schedule_time import InvalidInput, resolve_scheduled_time

log = logging.getLogger(__name__)
POLL_S = 0.005
MAX_BODY_BYTES = 16 * 1024
StatusLookup = Callable[[Request, str], Awaitable[JSONResponse]]
_ERROR = {"content": {"application/json": {"schema": {
    "type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}}}}
_DECISION = {"content": {"application/json": {"example": {
    "job_id": "3f1c2a9e-1b2c-4d5e-8f90-123456789abc", "status": "cancelled",
    "scheduled_time": "2025-02-16T05:27:00Z"}}}}
ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "Accepted by the job's release owner; reads now reflect it", **_DECISION},
    400: {"description": "Malformed id (or, for a reschedule, a bad body)", **_ERROR},
    401: {"description": "Missing or invalid API key (when API_KEYS is set)", **_ERROR},
    404: {"description": "No such job (or another key's)", **_ERROR},
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


class Decisions:
    """Waits for commands' decisions to appear in `status_commands`."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime  # its pool exists once the app has started
        self._waiting: dict[UUID, asyncio.Future[tuple[bool, str]]] = {}
        self._wakeup = asyncio.Event()

    async def wait(self, command_id: UUID, timeout_s: float) -> tuple[bool, str] | None:
        """(accepted, state) once folded, or None after `timeout_s`."""
        future: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()
        self._waiting[command_id] = future
        self._wakeup.set()
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            return None
        finally:
            self._waiting.pop(command_id, None)

    async def run(self) -> None:
        while True:
            if not self._waiting:
                self._wakeup.clear()
                await self._wakeup.wait()
            await asyncio.sleep(POLL_S)
            try:
                await self._poll()
            except Exception as exc:  # noqa: BLE001 - the next tick retries; waiters have deadlines
                log.warning("looking up command decisions failed (%s); retrying", exc)
                await asyncio.sleep(0.2)

    async def _poll(self) -> None:
        waiting = list(self._waiting)
        if not waiting:
            return
        async with self._runtime.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT command_id, accepted, state FROM status_commands WHERE command_id = ANY(%s)",
                (waiting,))).fetchall()
        for command_id, accepted, state in rows:
            future = self._waiting.get(command_id)
            if future is not None and not future.done():
                future.set_result((accepted, state))


def command_router(settings: StatusSettings, runtime: Runtime, decisions: Decisions,
                   job_status: StatusLookup) -> APIRouter:
    router = APIRouter(tags=["jobs"])
    tz = ZoneInfo(settings.default_timezone)

    async def current(request: Request, job_id: str) -> tuple[JSONResponse | None, dict[str, Any]]:
        """(an error response, or None) and the job's status body (auth and 404 included)."""
        response = await job_status(request, job_id)
        if response.status_code != 200:
            return response, {}
        return None, json.loads(response.body)

    async def decided(request: Request, job_id: str, command: Event, verb: str) -> JSONResponse:
        try:
            async with asyncio.timeout(settings.ingest_publish_timeout_s):
                await runtime.producer.send_and_wait(settings.topics.jobs, encode_event(command),
                                                     key=job_id.encode())
        except TimeoutError:
            return error(503, "Kafka did not acknowledge the command; nothing was changed, retry shortly",
                         {"Retry-After": "1"})
        decision = await decisions.wait(command.command_id, settings.status_command_wait_s)  # type: ignore[attr-defined]
        if decision is None:
            return error(504, f"the scheduler has not decided the {verb} yet; it stays queued and will be"
                              " decided: repeat the request to learn the decision")
        accepted, state = decision
        _, body = await current(request, job_id)
        if accepted:
            return JSONResponse({"job_id": job_id, "status": body.get("status"),
                                 "scheduled_time": body.get("scheduled_time")})
        named = await refused_status(request, job_id, state, body)
        return error(409, f"job is already {named}; only a scheduled job can be {verb}")

    async def refused_status(request: Request, job_id: str, state: str, body: dict[str, Any]) -> str:
        """The status a refused command names. A refusal may be folded just before the
        release that won (after a scheduler crash): wait, bounded, until the view shows it."""
        if state == "cancelled":
            return "cancelled"
        deadline = time.monotonic() + settings.status_read_your_writes_wait_s
        while body.get("status") == "scheduled" and state == "released" and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            _, body = await current(request, job_id)
        status = body.get("status", "unknown")
        return "ongoing" if status == "scheduled" and state == "released" else str(status)

    @router.delete("/api/jobs/{job_id}", responses=ANSWERS)
    async def cancel(request: Request, job_id: str) -> JSONResponse:
        """Cancel a job that has not been released: 200 `cancelled` (never released: no task,
        no result), or 409 naming the status the job is already in."""
        failed, body = await current(request, job_id)
        if failed:
            return failed
        if body["status"] == "cancelled":
            return JSONResponse({"job_id": job_id, "status": "cancelled", "scheduled_time": body["scheduled_time"]})
        if body["status"] != "scheduled":  # released: no command can take that back
            return error(409, f"job is already {body['status']}; only a scheduled job can be cancelled")
        command = JobCancelRequested(job_id=UUID(job_id), command_id=uuid4())
        return await decided(request, job_id, command, "cancelled")

    @router.patch("/api/jobs/{job_id}", responses=ANSWERS, openapi_extra=RESCHEDULE_BODY)
    async def reschedule(request: Request, job_id: str) -> JSONResponse:
        """Move a job that has not been released to a new `scheduled_time` (the same rules as
        submit: offset honoured, naive in DEFAULT_TIMEZONE, past means now): 200 with the new
        time, or 409 naming the status the job is already in."""
        failed, body = await current(request, job_id)
        if failed:
            return failed
        try:
            when = await new_time(request)
        except InvalidInput as exc:
            return error(400, str(exc))
        if body["status"] != "scheduled":
            return error(409, f"job is already {body['status']}; only a scheduled job can be rescheduled")
        command = JobRescheduleRequested(job_id=UUID(job_id), command_id=uuid4(), scheduled_time=when)
        return await decided(request, job_id, command, "rescheduled")

    async def new_time(request: Request) -> datetime:
        raw = await read_body_capped(request, MAX_BODY_BYTES)
        if raw is None:
            raise InvalidInput(f"body: larger than {MAX_BODY_BYTES} bytes")
        try:
            parsed = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise InvalidInput("body: must be JSON, e.g. {\"scheduled_time\": \"2025-02-16T10:57:00+05:30\"}") from None
        if not isinstance(parsed, dict) or parsed.get("scheduled_time") is None:
            raise InvalidInput("scheduled_time: required")
        return resolve_scheduled_time(parsed["scheduled_time"], datetime.now(UTC), tz,
                                      settings.ingest_max_schedule_days)

    return router
