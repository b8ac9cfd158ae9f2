"""Cancel and reschedule, decided by the job's release owner: the scheduler instance that owns
the job's partition, the only one that may release it.

A command arrives on the jobs topic after the job's `JobSubmitted` (same key, same partition)
and is decided in one transaction that locks the job's row, so it is ordered against the
release: the release moves a job from `pending` to `releasing` before producing any task, and
a command finds the job either still `pending` (accepted: it is cancelled or moved, and no
task is ever produced) or already claimed (refused). Each decision is stored with its effect;
a command redelivered after a crash gets the stored answer again.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from services.scheduler.domain import Command, Decision, decide
from shared.db import columns, transaction


async def record_decisions(pool: AsyncConnectionPool, commands: list[Command]) -> list[tuple[Decision, bool]]:
    """Each command's decision, in order, with True when it was decided now (False: decided
    before, its effect already in the table)."""
    async with transaction(pool) as conn:
        known = await _stored_decisions(conn, [c.command_id for c in commands])
        rows = await (await conn.execute(
            "SELECT job_id, state FROM scheduler_jobs WHERE job_id = ANY(%s) ORDER BY job_id FOR UPDATE",
            (sorted({c.job_id for c in commands}),))).fetchall()
        states: dict[Any, Any] = dict(rows)
        out: list[tuple[Decision, bool]] = []
        for command in commands:
            if command.command_id in known:
                out.append((known[command.command_id], False))
                continue
            decision = decide(command, states.get(command.job_id))
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
        await conn.execute("UPDATE scheduler_jobs SET state = 'cancelled'"
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
