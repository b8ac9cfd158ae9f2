"""Cancel and reschedule, decided by the job's release owner: the scheduler instance that owns
the job's partition, the only one that may release it.

A command arrives on the jobs topic after the job's `JobSubmitted` (same key, same partition).
It is accepted only while the job is pending *and still held by this instance's timer*: the
worker decides under the same lock as the release, so a job whose release has begun (popped
from the timer) is refused, and one that is accepted is dropped from (or moved in) the timer
before the lock is released, so it is never released at the old time. After a restart, jobs
already due when loaded may have been released by the previous process just before it died
(the mark comes after the acknowledgements): `holds` says no for them until this process has
released them itself. Each decision is stored with its effect in one transaction; a command
redelivered after a crash gets the stored answer again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg_pool import AsyncConnectionPool

from services.scheduler.domain import Command, Decision, decide
from shared.admissions import admit
from shared.db import columns, transaction


async def record_decisions(pool: AsyncConnectionPool, commands: list[Command],
                           holds: Callable[[Any], bool]) -> list[tuple[Decision, bool]]:
    """Each command's decision, in order, with True when it was decided now (False: decided
    before, its effect already in the table). `holds(job_id)`: the job is still waiting in
    this instance's timer, no release of it begun."""
    async with transaction(pool) as conn:
        withdrawn = await admit(conn, [c.command_id for c in commands])  # their 503 said: nothing changed
        known = await _stored_decisions(conn, [c.command_id for c in commands])
        rows = await (await conn.execute(
            "SELECT job_id, state FROM scheduler_jobs WHERE job_id = ANY(%s) ORDER BY job_id FOR UPDATE",
            (sorted({c.job_id for c in commands}),))).fetchall()
        # a pending row whose release has begun is, for a command, already released
        states: dict[Any, Any] = {job: "releasing" if state == "pending" and not holds(job) else state
                                  for job, state in rows}
        out: list[tuple[Decision, bool]] = []
        for command in commands:
            if command.command_id in known:
                out.append((known[command.command_id], False))
                continue
            decision = decide(command, "withdrawn" if command.command_id in withdrawn else states.get(command.job_id))
            if decision.accepted:  # a later command of the same batch sees this one's effect
                states[command.job_id] = decision.state
            known[command.command_id] = decision
            out.append((decision, True))
        await _store_effects(conn, [d for d, new in out if new])
    return out


async def _stored_decisions(conn: Any, command_ids: list[Any]) -> dict[Any, Decision]:
    rows = await (await conn.execute(
        "SELECT command_id, job_id, command, accepted, state, scheduled_time FROM scheduler_commands"
        " WHERE command_id = ANY(%s)", (command_ids,))).fetchall()
    return {row[0]: Decision(*row) for row in rows}


async def _store_effects(conn: Any, decisions: list[Decision]) -> None:
    """The accepted commands' effects on the schedule, and every decision."""
    if not decisions:
        return
    cancelled = [d.job_id for d in decisions if d.accepted and d.command == "cancel"]
    if cancelled:
        await conn.execute("UPDATE scheduler_jobs SET state = 'cancelled', finished_at = now()"
                           " WHERE job_id = ANY(%s) AND state = 'pending'", (cancelled,))
    moved = {d.job_id: d.scheduled_time for d in decisions if d.accepted and d.command == "reschedule"}
    if moved:  # the stored event carries the new time too: the tasks are released with it
        await conn.execute(
            "UPDATE scheduler_jobs AS j SET due_at = u.due_at,"
            " event = jsonb_set(j.event, '{scheduled_time}', to_jsonb(u.iso))"
            " FROM unnest(%s::uuid[], %s::timestamptz[], %s::text[]) AS u(job_id, due_at, iso)"
            " WHERE j.job_id = u.job_id AND j.state = 'pending'",
            columns((job, when, when.isoformat()) for job, when in moved.items()))  # type: ignore[union-attr]
    await conn.execute(
        "INSERT INTO scheduler_commands (command_id, job_id, command, accepted, state, scheduled_time)"
        " SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::boolean[], %s::text[],"
        " %s::timestamptz[]) ON CONFLICT (command_id) DO NOTHING",
        columns((d.command_id, d.job_id, d.command, d.accepted, d.state, d.scheduled_time) for d in decisions))
