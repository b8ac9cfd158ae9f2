"""Completion webhooks at the edges: the deliveries table (claimed with a lease, an attempt
recorded with its decision, read back for the job's owner) and the HTTP sender.

The sender POSTs with one aiohttp session under the image hosts' SSRF rules (shared/ssrf.py:
the resolver refuses what is not allowed, IP literals are checked before the request), a total
deadline per attempt, no redirects followed, and at most 64 KiB of the answer read (then
dropped): a receiver can hold an attempt no longer than the deadline and cannot make the
sender read or store anything.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any
from uuid import UUID

import aiohttp
from psycopg import AsyncConnection
from yarl import URL

from services.status.domain import PENDING, Decision, Due, Recorded, Sent, WebhookView
from shared.db import columns, transaction
from shared.group_commit import GroupCall
from shared.retry import is_transient
from shared.ssrf import AddressNotAllowed, GuardedResolver, check_url_host
from shared.webhooks import webhook_id_for

MAX_ANSWER_BYTES = 64 * 1024


# -- the deliveries table -----------------------------------------------------------------
# Due rows, oldest due first, each taken for `lease` seconds: SKIP LOCKED lets several status
# instances claim at once without waiting on each other, and the lease (past the attempt's
# deadline) keeps a row from being sent twice at once. A process killed mid-attempt leaves
# its rows to be claimed again when their leases run out.
CLAIM = (
    "UPDATE webhook_deliveries SET next_attempt_at = now() + make_interval(secs => %(lease)s)"
    " WHERE job_id IN (SELECT job_id FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= now()"
    " ORDER BY next_attempt_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
    " RETURNING job_id, webhook_id, url, attempts, created_at")
# Many attempts at once (a burst makes many jobs final together), each row only if it is still as
# it was claimed: when another instance took it over after the lease ran out and recorded first,
# this attempt is not recorded again (the receiver got the message twice, with the same
# webhook-id: at least once).
RECORD = (
    "UPDATE webhook_deliveries AS d SET attempts = d.attempts + 1, state = v.state, next_attempt_at = v.next,"
    " last_status = v.status, last_error = v.error,"
    " delivered_at = CASE WHEN v.state = 'delivered' THEN now() END"
    " FROM unnest(%b::uuid[], %b::int[], %b::text[], %b::timestamptz[], %b::int[], %b::text[])"
    " AS v(job_id, attempts, state, next, status, error)"
    " WHERE d.job_id = v.job_id AND d.state = 'pending' AND d.attempts = v.attempts"
    " RETURNING d.job_id, extract(epoch FROM d.delivered_at - d.created_at)::float8")
RECORD_ATTEMPTS = (
    "INSERT INTO webhook_attempts (job_id, attempt, at, status_code, error, duration_ms)"
    " SELECT * FROM unnest(%b::uuid[], %b::int[], %b::timestamptz[], %b::int[], %b::text[], %b::int[])"
    " ON CONFLICT DO NOTHING")
# A record waits for the one running (GroupCall): under load one transaction carries many.
RECORD_LINGER_S = 0.0


async def claim(conn: AsyncConnection[Any], limit: int, lease_s: float) -> list[Due]:
    rows = await (await conn.execute(CLAIM, {"lease": lease_s, "limit": limit})).fetchall()
    return [Due(*row) for row in rows]


Attempt = tuple[Due, datetime, Sent, Decision]


def _text(error: str | None) -> str | None:
    """An error as PostgreSQL's text takes it (an exception's message may quote a NUL byte a
    receiver sent)."""
    return error.replace("\x00", "\\x00") if error else error


async def record(conn: AsyncConnection[Any], attempts: list[Attempt]) -> list[Recorded | None]:
    """Store the attempts and their decisions, in order; None for a row that was no longer ours.
    Two attempts of one job in a batch (its lease ran out while the first waited to be recorded,
    and it was claimed again): the first is recorded, the other is not ours, as when they are
    recorded one after the other (one UPDATE would apply either of them)."""
    first: dict[UUID, int] = {}
    for i, (due, *_) in enumerate(attempts):
        first.setdefault(due.job_id, i)
    distinct = [attempts[i] for i in sorted(first.values())]
    rows = await (await conn.execute(RECORD, columns(
        [(due.job_id, due.attempts, decision.state, decision.next_attempt_at, sent.status_code, _text(sent.error))
         for due, _, sent, decision in distinct]))).fetchall()
    delays: dict[UUID, float | None] = dict(rows)
    ours = [(due.job_id, due.attempts + 1, at, sent.status_code, _text(sent.error), sent.duration_ms)
            for due, at, sent, _ in distinct if due.job_id in delays]
    if ours:
        await conn.execute(RECORD_ATTEMPTS, columns(ours))
    return [Recorded(delays[due.job_id]) if due.job_id in delays and first[due.job_id] == i else None
            for i, (due, *_) in enumerate(attempts)]


async def pending(conn: AsyncConnection[Any]) -> int:
    row = await (await conn.execute("SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'")).fetchone()
    return int(row[0]) if row else 0


async def webhook_of(conn: AsyncConnection[Any], job_id: UUID) -> WebhookView | None:
    """The job's webhook, or None when it has no callback_url."""
    row = await (await conn.execute(
        "SELECT j.callback_url, d.webhook_id, d.state, d.next_attempt_at, d.delivered_at"
        " FROM status_jobs AS j LEFT JOIN webhook_deliveries AS d USING (job_id)"
        " WHERE j.job_id = %s AND j.callback_url IS NOT NULL", (job_id,))).fetchone()
    if row is None:
        return None
    url, webhook_id, state, next_at, delivered_at = row
    attempts = await (await conn.execute(
        "SELECT attempt, at, status_code, error, duration_ms FROM webhook_attempts WHERE job_id = %s"
        " ORDER BY attempt", (job_id,))).fetchall()
    return WebhookView(url, webhook_id or webhook_id_for(job_id), state or "waiting",
                       [{"attempt": n, "at": at, "status_code": code, "error": error, "duration_ms": ms}
                        for n, at, code, error, ms in attempts],
                       next_at if state == PENDING else None, delivered_at)


class WebhookStore:
    """The deliveries table on pooled connections (the handlers' `Deliveries`)."""

    def __init__(self, runtime: Any) -> None:
        self._runtime = runtime  # its pool exists once the app has started
        self._records: GroupCall[Attempt, Recorded | None | Exception] = GroupCall(self._record_many, RECORD_LINGER_S)

    async def claim(self, limit: int, lease_s: float) -> list[Due]:
        async with self._runtime.pool.connection() as conn:
            return await claim(conn, limit, lease_s)

    async def record(self, due: Due, at: datetime, sent: Sent, decision: Decision) -> Recorded | None:
        """Recorded with the attempts that finish meanwhile, in one transaction (shared/group_commit.py)."""
        outcome = await self._records.call((due, at, sent, decision))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def _record_many(self, attempts: list[Attempt]) -> list[Recorded | None | Exception]:
        """One transaction for all; if the database refuses it for a reason other than its own
        state, one per attempt, so only the attempt at fault fails (and is claimed again when
        its lease runs out) and no other waits behind it."""
        try:
            async with transaction(self._runtime.pool) as conn:
                return list(await record(conn, attempts))
        except Exception as exc:
            if len(attempts) == 1 or is_transient(exc):
                raise
        alone: list[Recorded | None | Exception] = []
        for attempt in attempts:
            answer: Recorded | None | Exception
            try:
                async with transaction(self._runtime.pool) as conn:
                    [answer] = await record(conn, [attempt])
            except Exception as exc:  # noqa: BLE001 - its caller gets it (a failed commit too)
                answer = exc
            alone.append(answer)
        return alone

    async def pending(self) -> int:
        async with self._runtime.pool.connection() as conn:
            return await pending(conn)

    async def webhook_of(self, job_id: UUID) -> WebhookView | None:
        async with self._runtime.pool.connection() as conn:
            return await webhook_of(conn, job_id)


# -- HTTP ---------------------------------------------------------------------------------
class WebhookSender:
    def __init__(self, timeout_s: float, allow_private: bool, connections: int,
                 resolver: GuardedResolver | None = None) -> None:
        self.timeout_s, self.allow_private, self._connections = timeout_s, allow_private, connections
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(resolver=self._resolver or GuardedResolver(self.allow_private),
                                         limit=self._connections, ttl_dns_cache=60)
        self._session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": "imagejobs-webhooks/1.0"},
                                              timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False)

    async def close(self) -> None:
        if self._session:
            await self._session.close()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Sent:
        """One attempt: the receiver's status (its answer read up to 64 KiB and dropped), or why
        there was none."""
        assert self._session is not None
        started = time.perf_counter()

        def took() -> int:
            return round((time.perf_counter() - started) * 1000)
        try:
            target = URL(url)
            check_url_host(target.host or "", self.allow_private)
            async with asyncio.timeout(self.timeout_s):
                async with self._session.post(target, data=body, headers=headers, allow_redirects=False) as answer:
                    await _drop_answer(answer)
                    return Sent(answer.status, _why(answer.status), took())
        except AddressNotAllowed as exc:
            return Sent(None, str(exc), took(), refused=True)
        except TimeoutError:
            return Sent(None, f"no answer within {self.timeout_s:g}s", took())
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, AddressNotAllowed):  # the resolver refused what the name resolves to
                return Sent(None, str(exc.os_error), took(), refused=True)
            return Sent(None, f"connection failed: {exc.os_error}", took())
        except aiohttp.ClientError as exc:
            return Sent(None, f"{type(exc).__name__}: {exc}"[:1000], took())
        except (ValueError, UnicodeError) as exc:  # yarl or idna refusing the URL
            return Sent(None, f"invalid URL: {exc}"[:1000], took(), refused=True)


def _why(status: int) -> str | None:
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"HTTP {status} (redirects are not followed)"
    return f"HTTP {status}"


async def _drop_answer(answer: aiohttp.ClientResponse) -> None:
    """Read a little of the answer (so a short one leaves the connection reusable), keep none."""
    read = 0
    while read < MAX_ANSWER_BYTES:
        chunk = await answer.content.readany()
        if not chunk:
            return
        read += len(chunk)
