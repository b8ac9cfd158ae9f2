"""Reading a job: its status (with per-store errors when failed) and its per-image results.

Read-your-writes: ingest answers 200 only after `JobSubmitted` is in Kafka, so when a job is
not in the view yet, the read looks up the end offset of the job's partition and waits
(bounded) until the projector has folded past it: a status request right after a successful
submit never answers 404, and a truly unknown id costs one offset lookup.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from services.status.adapters.view import JobRow
from services.status.domain import FAILED, STATUSES, first_error_per_store, parse_job_ids
from shared.http import RETRY_SHORTLY, Reply
from shared.schedule_time import InvalidInput

NOT_FOUND = "job not found"




class ViewReads(Protocol):
    async def load_job(self, job_id: UUID) -> JobRow | None: ...
    async def list_jobs(self, owners: list[str], keys_on: bool, status: str | None, limit: int,
                        after: tuple[datetime, UUID] | None) -> list[tuple[JobRow, datetime]]: ...
    async def failures(self, job_id: UUID) -> list[tuple[str, int, int, str]]: ...
    async def results_page(self, job_id: UUID, limit: int, offset: int) -> list[dict[str, Any]]: ...
    async def load_jobs(self, job_ids: list[UUID]) -> list[tuple[JobRow, list[Any] | None]]: ...
    async def folded_offsets(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]: ...


class PartitionEnds(Protocol):
    """Each job's partition of the jobs topic and that partition's end offset now."""

    async def __call__(self, job_ids: list[UUID]) -> dict[UUID, tuple[str, int, int]]: ...


@dataclass(frozen=True)
class Caller:
    """Who asks: their tenant (None without auth), whether keys are on, and the owners recorded
    before tenants existed that are the tenant's too (the hashes of its keys, shared/auth.py)."""

    owner: str | None
    keys_on: bool
    legacy: frozenset[str] = frozenset()

    @property
    def owners(self) -> list[str]:
        """Every owner a job of this caller's tenant may be recorded under."""
        return sorted(self.legacy if self.owner is None else self.legacy | {self.owner})

    def may_see(self, row: JobRow) -> bool:
        return not self.keys_on or row.owner == self.owner or row.owner in self.legacy


class JobReader:
    def __init__(self, reads: ViewReads, partition_ends: PartitionEnds, connected: Callable[[], bool],
                 wait_s: float) -> None:
        self.reads, self._partition_ends, self._connected, self._wait_s = reads, partition_ends, connected, wait_s

    async def status(self, raw_id: str | None, caller: Caller) -> Reply:
        found = await self.find(raw_id, caller)
        if isinstance(found, Reply):
            return found
        # the per-store errors: only a failed job's status answer needs them
        failures = await self.reads.failures(found.job_id) if found.status == FAILED else None
        return Reply(200, full_status(found, failures))

    async def current(self, raw_id: str, caller: Caller) -> Reply:
        """The job's status and time without its error list (what a command decides on)."""
        found = await self.find(raw_id, caller)
        return found if isinstance(found, Reply) else Reply(200, status_body(found))

    async def results(self, raw_id: str, caller: Caller, limit: int, offset: int) -> Reply:
        found = await self.find(raw_id, caller)
        if isinstance(found, Reply):
            return found
        items = await self.reads.results_page(found.job_id, limit, offset)
        return Reply(200, {"job_id": raw_id, "limit": limit, "offset": offset, "results": items})

    async def list(self, caller: Caller, status: str | None, limit: int, cursor: str | None) -> Reply:
        """The caller's jobs, newest first; `next_cursor` continues after the last one."""
        if status is not None and status not in STATUSES:
            return Reply.error(400, f"status: must be one of {', '.join(STATUSES)}")
        try:
            after = decode_cursor(cursor) if cursor else None
        except ValueError:
            return Reply.error(400, "cursor: not a cursor this API gave out")
        rows = await self.reads.list_jobs(caller.owners, caller.keys_on, status, limit, after)
        jobs = [{**status_body(row), "submitted_at": iso(at)} for row, at in rows]
        following = encode_cursor(rows[-1][1], rows[-1][0].job_id) if len(rows) == limit else None
        return Reply(200, {"jobs": jobs, "next_cursor": following})

    async def statuses(self, body: Any, caller: Caller) -> Reply:
        """Many jobs' statuses in one view query: `{"jobs": [...], "not_found": [...]}`, in the
        order asked. Another tenant's job is listed as not found, like an unknown one; ids not
        in the view yet wait (bounded) for the fold, as a single status read does."""
        try:
            ids = [UUID(job_id) for job_id in parse_job_ids(body)]
        except InvalidInput as exc:
            return Reply.error(400, str(exc))
        if not self._connected():
            return Reply.error(503, "not connected yet; retry shortly", RETRY_SHORTLY)
        found = {row.job_id: (row, errors) for row, errors in await self.reads.load_jobs(ids)}
        missing = [job_id for job_id in ids if job_id not in found]
        if missing:
            try:
                async with asyncio.timeout(self._wait_s + 1):
                    found |= await self._wait_for_folds(missing)
            except TimeoutError:
                return Reply.error(503, "status not available yet; retry shortly", RETRY_SHORTLY)
        jobs, not_found = [], []
        for job_id in ids:
            row, errors = found.get(job_id, (None, None))
            if row is None or not caller.may_see(row):
                not_found.append(str(job_id))
                continue
            jobs.append(full_status(row, errors))
        return Reply(200, {"jobs": jobs, "not_found": not_found})

    async def _wait_for_folds(self, job_ids: list[UUID]) -> dict[UUID, tuple[JobRow, list[Any] | None]]:
        """The jobs not in the view yet: one offsets request, then the view polled until it holds
        them all or has folded every partition they live on up to its end (the rest are
        unknown), for at most `wait_s`."""
        ends = await self._partition_ends(job_ids)
        partitions = sorted({(topic, partition) for topic, partition, _ in ends.values()})
        deadline = time.monotonic() + self._wait_s
        while True:
            folded = await self.reads.folded_offsets(partitions)
            rows = {row.job_id: (row, errors) for row, errors in await self.reads.load_jobs(job_ids)}
            caught_up = all(folded.get((topic, partition), 0) >= end for topic, partition, end in ends.values())
            if len(rows) == len(job_ids) or caught_up or time.monotonic() >= deadline:
                return rows
            await asyncio.sleep(0.02)

    async def find(self, raw_id: str | None, caller: Caller) -> JobRow | Reply:
        """The caller's job, or the error to answer (400, 404, 503)."""
        if not raw_id:
            return Reply.error(400, "jobid: required")
        try:
            job_id = UUID(raw_id)
        except ValueError:
            return Reply.error(400, "job_id: must be a UUID")
        if not self._connected():
            return Reply.error(503, "not connected yet; retry shortly", RETRY_SHORTLY)
        row = await self.reads.load_job(job_id)
        if row is None:
            try:
                async with asyncio.timeout(self._wait_s + 1):
                    row = (await self._wait_for_folds([job_id])).get(job_id, (None, None))[0]
            except TimeoutError:  # Kafka did not answer the offset lookup: we cannot tell yet
                return Reply.error(503, "status not available yet; retry shortly", RETRY_SHORTLY)
        if row is None or not caller.may_see(row):  # another tenant's job: as if it did not exist
            return Reply.error(404, NOT_FOUND)
        return row


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def encode_cursor(at: datetime, job_id: UUID) -> str:
    """An opaque keyset cursor: the last job's submission time and id."""
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{job_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The keyset a cursor stands for; ValueError for anything this API did not give out."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, job_id = raw.partition("|")
        moment = datetime.fromisoformat(at)
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise ValueError("bad cursor") from exc
    if moment.tzinfo is None:
        raise ValueError("bad cursor")
    return moment, UUID(job_id)


def full_status(row: JobRow, failures: Iterable[Sequence[Any]] | None) -> dict[str, Any]:
    """The answer of `GET /api/status/{id}` (and of a progress event, a batch entry and a
    webhook): `status_body`, plus the first error per store when the job failed, from its
    failed images' (store_id, visit_index, image_index, error)."""
    body = status_body(row)
    if row.status == FAILED:
        body["error"] = first_error_per_store(failures or [])
    return body


def status_body(row: JobRow) -> dict[str, Any]:
    return {
        "job_id": str(row.job_id), "status": row.status,
        "scheduled_time": iso(row.scheduled_time), "priority": row.priority,
        "images": {"total": row.total, "succeeded": row.succeeded, "failed": row.failed,
                   "pending": max(0, row.total - row.succeeded - row.failed), "started": row.started},
    }
