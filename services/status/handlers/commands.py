"""Cancel and reschedule: commands the status API forwards to the job's release owner,
answering with its decision.

The API does not decide: a job's fate is decided by the scheduler instance that would release
it, in order with the release (services/scheduler/adapters/commands.py). The use case publishes
the command on the jobs topic (keyed by job_id, so it follows the job's own events), then
waits until the projector has folded the decision into the view; the view and the decision are
written in one transaction, so a read after the answer reflects it. While any command is
waited for, one poller per process looks all of them up together every few milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

from services.status.domain import CANCELLED, SCHEDULED
from services.status.handlers.jobs import Caller, JobReader
from shared.events import JobCancelRequested, JobRescheduleRequested
from shared.http import RETRY_SHORTLY, Reply
from shared.publishing import NotAccepted
from shared.schedule_time import InvalidInput, resolve_scheduled_time

log = logging.getLogger(__name__)
POLL_S = 0.005
Command = JobCancelRequested | JobRescheduleRequested


class DecisionReads(Protocol):
    async def decisions(self, command_ids: list[UUID]) -> dict[UUID, tuple[bool, str]]: ...


class CommandBus(Protocol):
    async def __call__(self, command: Command) -> None:
        """Publish the command, acknowledged (raises NotAccepted when it will never be decided)."""


class Decisions:
    """Waits for commands' decisions to be folded into the view."""

    def __init__(self, reads: DecisionReads) -> None:
        self._reads = reads
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
        if not self._waiting:
            return
        for command_id, decision in (await self._reads.decisions(list(self._waiting))).items():
            future = self._waiting.get(command_id)
            if future is not None and not future.done():
                future.set_result(decision)


class JobCommands:
    def __init__(self, reader: JobReader, publish: CommandBus, decisions: Decisions, tz: ZoneInfo,
                 max_schedule_days: int, wait_s: float, view_wait_s: float) -> None:
        self.reader, self.publish, self.decisions = reader, publish, decisions
        self.tz, self.max_days, self.wait_s, self.view_wait_s = tz, max_schedule_days, wait_s, view_wait_s

    async def cancel(self, raw_id: str, caller: Caller) -> Reply:
        """200 `cancelled` (never released: no task, no result), or 409 naming the status."""
        current = await self.reader.current(raw_id, caller)
        if current.status != 200:
            return current
        status = current.body["status"]
        if status == CANCELLED:
            return Reply(200, {"job_id": raw_id, "status": CANCELLED,
                               "scheduled_time": current.body["scheduled_time"]})
        if status != SCHEDULED:  # released: no command can take that back
            return refusal(status, "cancelled")
        return await self._decided(raw_id, caller, JobCancelRequested(job_id=UUID(raw_id), command_id=uuid4()))

    async def reschedule(self, raw_id: str, caller: Caller, body: Any) -> Reply:
        """200 with the new time, 409 naming the status, or 400 for a bad time (no change)."""
        current = await self.reader.current(raw_id, caller)
        if current.status != 200:
            return current
        try:
            when = self.new_time(body)
        except InvalidInput as exc:
            return Reply.error(400, str(exc))
        if current.body["status"] != SCHEDULED:
            return refusal(current.body["status"], "rescheduled")
        command = JobRescheduleRequested(job_id=UUID(raw_id), command_id=uuid4(), scheduled_time=when)
        return await self._decided(raw_id, caller, command)

    def new_time(self, body: Any) -> datetime:
        """The same rules as submit: offset honoured, naive in DEFAULT_TIMEZONE, past is now."""
        if not isinstance(body, dict) or body.get("scheduled_time") is None:
            raise InvalidInput("scheduled_time: required")
        return resolve_scheduled_time(body["scheduled_time"], datetime.now(UTC), self.tz, self.max_days)

    async def _decided(self, raw_id: str, caller: Caller, command: Command) -> Reply:
        cancel = isinstance(command, JobCancelRequested)
        noun, verb = ("cancel", "cancelled") if cancel else ("reschedule", "rescheduled")
        try:
            await self.publish(command)
        except NotAccepted:
            return Reply.error(503, "Kafka did not acknowledge the command; nothing was changed, retry shortly",
                               RETRY_SHORTLY)
        decision = await self.decisions.wait(command.command_id, self.wait_s)
        if decision is None:
            return Reply.error(504, f"the scheduler has not decided the {noun} yet; it stays queued and"
                                    " will be decided: repeat the request to learn the decision")
        accepted, state = decision
        now = await self.reader.current(raw_id, caller)
        if accepted:
            return Reply(200, {"job_id": raw_id, "status": now.body.get("status"),
                               "scheduled_time": now.body.get("scheduled_time")})
        return refusal(await self._refused_status(raw_id, caller, state, now.body), verb)

    async def _refused_status(self, raw_id: str, caller: Caller, state: str, body: dict[str, Any]) -> str:
        """The status a refused command names. A refusal may be folded just before the
        release that won (after a scheduler crash): wait, bounded, until the view shows it."""
        if state == CANCELLED:
            return CANCELLED
        deadline = time.monotonic() + self.view_wait_s
        while body.get("status") == SCHEDULED and state == "released" and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            body = (await self.reader.current(raw_id, caller)).body
        status = str(body.get("status", "unknown"))
        return "ongoing" if status == SCHEDULED and state == "released" else status


def refusal(status: str, verb: str) -> Reply:
    return Reply.error(409, f"job is already {status}; only a scheduled job can be {verb}")


