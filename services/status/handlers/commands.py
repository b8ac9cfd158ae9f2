"""Cancel and reschedule: commands the status API forwards to the job's release owner,
answering with its decision.

The API does not decide: a job's fate is decided by the scheduler instance that would release
it, in order with the release (services/scheduler/handlers/release.py, `Releaser.decide`). The use case publishes
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
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

from services.status.domain import (
    CANCELLED,
    SCHEDULED,
    Caller,
    CommandRefused,
    CommandUndecided,
    JobRow,
    RetryShortly,
)
from services.status.handlers.jobs import JobReader
from services.status.ports import CommandBus, DecisionReads
from shared.api import JobChanged
from shared.events import JobCancelRequested, JobCommand, JobRescheduleRequested, iso
from shared.publishing import NotAccepted
from shared.schedule_time import InvalidInput, resolve_scheduled_time

log = logging.getLogger(__name__)
POLL_S = 0.005


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

    async def cancel(self, raw_id: str, caller: Caller) -> JobChanged:
        """The job `cancelled` (never released: no task, no result); CommandRefused naming the
        status it is in when released."""
        current = await self.reader.find(raw_id, caller)
        if current.status == CANCELLED:
            return changed(raw_id, current)
        if current.status != SCHEDULED:  # released: no command can take that back
            raise CommandRefused(current.status, "cancelled")
        return await self._decided(raw_id, caller, JobCancelRequested(job_id=UUID(raw_id), command_id=uuid4()))

    async def reschedule(self, raw_id: str, caller: Caller, body: Any) -> JobChanged:
        """The job with its new time; CommandRefused naming its status, or InvalidInput for a
        bad time (nothing changed)."""
        current = await self.reader.find(raw_id, caller)
        when = self.new_time(body)
        if current.status != SCHEDULED:
            raise CommandRefused(current.status, "rescheduled")
        command = JobRescheduleRequested(job_id=UUID(raw_id), command_id=uuid4(), scheduled_time=when)
        return await self._decided(raw_id, caller, command)

    def new_time(self, body: Any) -> datetime:
        """The same rules as submit: offset honoured, naive in DEFAULT_TIMEZONE, past is now."""
        if not isinstance(body, dict) or body.get("scheduled_time") is None:
            raise InvalidInput("scheduled_time: required")
        return resolve_scheduled_time(body["scheduled_time"], datetime.now(UTC), self.tz, self.max_days)

    async def _decided(self, raw_id: str, caller: Caller, command: JobCommand) -> JobChanged:
        cancel = isinstance(command, JobCancelRequested)
        noun, verb = ("cancel", "cancelled") if cancel else ("reschedule", "rescheduled")
        try:
            await self.publish(command)
        except NotAccepted:
            raise RetryShortly("Kafka did not acknowledge the command; nothing was changed, retry shortly") from None
        decision = await self.decisions.wait(command.command_id, self.wait_s)
        if decision is None:
            raise CommandUndecided(f"the scheduler has not decided the {noun} yet; it stays queued and"
                                   " will be decided: repeat the request to learn the decision")
        accepted, state = decision
        # The decision is in the view: a status read from now on must show it, even if this
        # process's fold has not yet told the read cache it committed (the two race by a hair).
        self.reader.changed(command.job_id)
        now = await self.reader.find(raw_id, caller)
        if accepted:
            return changed(raw_id, now)
        raise CommandRefused(await self._refused_status(raw_id, caller, state, now), verb)

    async def _refused_status(self, raw_id: str, caller: Caller, state: str, now: JobRow) -> str:
        """The status a refused command names. A refusal may be folded just before the
        release that won (after a scheduler crash): wait, bounded, until the view shows it."""
        if state == CANCELLED:
            return CANCELLED
        deadline = time.monotonic() + self.view_wait_s
        while now.status == SCHEDULED and state == "released" and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            now = await self.reader.find(raw_id, caller)
        return "ongoing" if now.status == SCHEDULED and state == "released" else now.status


def changed(raw_id: str, row: JobRow) -> JobChanged:
    """The answer to an accepted command: the job as reads now show it."""
    return JobChanged(job_id=raw_id, status=row.status, scheduled_time=iso(row.scheduled_time))


