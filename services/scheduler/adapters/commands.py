"""Cancel and reschedule decisions made durable: `scheduler_commands` and their effects on
`scheduler_jobs`, in one transaction, and their events handed to the producer.

The rule is the domain's (`decide_all`, services/scheduler/domain.py); who may apply it is the
releaser's business (handlers/release.py: the job's release owner, under its release lock, so
a job whose release has begun is refused). This adapter reads what the table holds for the
commands with the jobs' rows locked, lets the releaser's `decide` answer, and stores the new
decisions; a command redelivered after a crash gets the stored answer again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from services.scheduler.domain import Decided, Decision, Found, decision_event
from services.scheduler.ports import Acks
from shared.admissions import admit
from shared.db import columns, transaction
from shared.events import JobCommand, encode_event
from shared.runtime import Runtime


class CommandLedger:
    """`scheduler_commands` and the effects on `scheduler_jobs`, on the service's pool; the
    decisions' events on the jobs topic (port CommandLedger, services/scheduler/ports.py)."""

    def __init__(self, runtime: Runtime, jobs_topic: str) -> None:
        self.runtime, self.topic = runtime, jobs_topic

    async def settle(self, commands: Sequence[JobCommand], decide: Callable[[Found], Decided]) -> Decided:
        """One transaction: the commands admitted (their 503 said nothing changed, if withdrawn
        first), the decisions stored before, the jobs' rows locked in job id order and read;
        `decide` answers, and the new decisions are stored with their effects."""
        command_ids = [c.command_id for c in commands]
        async with transaction(self.runtime.pool) as conn:
            withdrawn = await admit(conn, command_ids)
            known = await _stored_decisions(conn, command_ids)
            rows = await (await conn.execute(
                "SELECT job_id, state FROM scheduler_jobs WHERE job_id = ANY(%s) ORDER BY job_id FOR UPDATE",
                (sorted({c.job_id for c in commands}),))).fetchall()
            decided = decide(Found(withdrawn, known, {job: state for job, state in rows}))
            await _store_effects(conn, [d for d, new in decided if new])
        return decided

    async def publish(self, decisions: Sequence[Decision]) -> Acks:
        producer = self.runtime.producer
        return [await producer.send(self.topic, encode_event(decision_event(d)), key=str(d.job_id).encode())
                for d in decisions]


async def _stored_decisions(conn: AsyncConnection[Any], command_ids: list[UUID]) -> dict[UUID, Decision]:
    rows = await (await conn.execute(
        "SELECT command_id, job_id, command, accepted, state, scheduled_time FROM scheduler_commands"
        " WHERE command_id = ANY(%s)", (command_ids,))).fetchall()
    return {row[0]: Decision(*row) for row in rows}


async def _store_effects(conn: AsyncConnection[Any], decisions: list[Decision]) -> None:
    """The accepted commands' effects on the schedule, and every decision."""
    if not decisions:
        return
    cancelled = [d.job_id for d in decisions if d.accepted and d.command == "cancel"]
    if cancelled:
        await conn.execute("UPDATE scheduler_jobs SET state = 'cancelled', finished_at = now()"
                           " WHERE job_id = ANY(%s) AND state = 'pending'", (cancelled,))
    moved = {d.job_id: d.scheduled_time for d in decisions
             if d.accepted and d.command == "reschedule" and d.scheduled_time is not None}
    if moved:  # the stored event carries the new time too: the tasks are released with it
        await conn.execute(
            "UPDATE scheduler_jobs AS j SET due_at = u.due_at,"
            " event = jsonb_set(j.event, '{scheduled_time}', to_jsonb(u.iso))"
            " FROM unnest(%s::uuid[], %s::timestamptz[], %s::text[]) AS u(job_id, due_at, iso)"
            " WHERE j.job_id = u.job_id AND j.state = 'pending'",
            columns((job, when, when.isoformat()) for job, when in moved.items()))
    await conn.execute(
        "INSERT INTO scheduler_commands (command_id, job_id, command, accepted, state, scheduled_time)"
        " SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::boolean[], %s::text[],"
        " %s::timestamptz[]) ON CONFLICT (command_id) DO NOTHING",
        columns((d.command_id, d.job_id, d.command, d.accepted, d.state, d.scheduled_time) for d in decisions))
