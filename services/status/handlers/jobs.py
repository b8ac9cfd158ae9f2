"""Reading a job: its status (with per-store errors when failed) and its per-image results.

Read-your-writes: ingest answers 200 only after `JobSubmitted` is in Kafka, so when a job is
not in the view yet, the read looks up the end offset of the job's partition and waits
(bounded) until the projector has folded past it: a status request right after a successful
submit never answers 404, and a truly unknown id costs one offset lookup.

Answers are the API's models (shared/api.py); refusals are the domain's errors
(InvalidInput, JobNotFound, RetryShortly), which app.py turns into HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from services.status.domain import (
    FAILED,
    STATUSES,
    Caller,
    JobNotFound,
    JobRow,
    RetryShortly,
    first_error_per_store,
    parse_job_ids,
)
from services.status.ports import CachedReads, PartitionEnds, ViewReads
from shared.api import BatchStatus, Images, JobList, JobListed, JobStatus, Result, Results, StoreError
from shared.events import iso
from shared.schedule_time import InvalidInput

NOT_CONNECTED = "not connected yet; retry shortly"
NOT_FOLDED = "status not available yet; retry shortly"


class JobReader:
    def __init__(self, reads: ViewReads, partition_ends: PartitionEnds, connected: Callable[[], bool],
                 wait_s: float, cache: CachedReads | None = None) -> None:
        self.reads, self._partition_ends, self._connected, self._wait_s = reads, partition_ends, connected, wait_s
        self._cache = cache  # handlers/read_cache.py: a job in the view, from memory when that is safe

    async def status(self, raw_id: str | None, caller: Caller) -> JobStatus:
        """The caller's job's status: one path for every read. The job and its failures (one
        query, or memory when the cache may answer); not in the view yet, the read-your-writes
        wait; then the owner check."""
        job_id = parse_job_id(raw_id)
        if not self._connected():
            raise RetryShortly(NOT_CONNECTED)
        if self._cache is not None:
            known = await self._cache.find(job_id)
        else:
            loaded = await self.reads.load_jobs([job_id])
            known = loaded[0] if loaded else None
        row, failures = known if known is not None else await self._folded_soon(job_id)
        if not caller.may_see(row):  # another tenant's job: as if it did not exist
            raise JobNotFound()
        return full_status(row, failures)

    def changed(self, job_id: UUID) -> None:
        """The view has committed a change to the job that this process's fold may not have
        announced yet (a command's decision): its next status read goes to the view."""
        if self._cache is not None:
            self._cache.changed({job_id})

    async def results(self, raw_id: str, caller: Caller, limit: int, offset: int) -> Results:
        found = await self.find(raw_id, caller)
        items = await self.reads.results_page(found.job_id, limit, offset)
        return Results(job_id=raw_id, limit=limit, offset=offset, results=[Result(**item) for item in items])

    async def jobs(self, caller: Caller, status: str | None, limit: int, cursor: str | None) -> JobList:
        """The caller's jobs, newest first; `next_cursor` continues after the last one."""
        if status is not None and status not in STATUSES:
            raise InvalidInput(f"status: must be one of {', '.join(STATUSES)}")
        try:
            after = decode_cursor(cursor) if cursor else None
        except ValueError:
            raise InvalidInput("cursor: not a cursor this API gave out") from None
        rows = await self.reads.list_jobs(caller.owners, caller.keys_on, status, limit, after)
        jobs = [JobListed(**_status_fields(row), submitted_at=iso(at)) for row, at in rows]
        following = encode_cursor(rows[-1][1], rows[-1][0].job_id) if len(rows) == limit else None
        return JobList(jobs=jobs, next_cursor=following)

    async def statuses(self, body: Any, caller: Caller) -> BatchStatus:
        """Many jobs' statuses in one view query, in the order asked. Another tenant's job is
        listed as not found, like an unknown one; ids not in the view yet wait (bounded) for
        the fold, as a single status read does."""
        ids = [UUID(job_id) for job_id in parse_job_ids(body)]
        if not self._connected():
            raise RetryShortly(NOT_CONNECTED)
        found = {row.job_id: (row, errors) for row, errors in await self.reads.load_jobs(ids)}
        missing = [job_id for job_id in ids if job_id not in found]
        if missing:
            try:
                async with asyncio.timeout(self._wait_s + 1):
                    found |= await self._wait_for_folds(missing)
            except TimeoutError:
                raise RetryShortly(NOT_FOLDED) from None
        jobs, not_found = [], []
        for job_id in ids:
            row, errors = found.get(job_id, (None, None))
            if row is None or not caller.may_see(row):
                not_found.append(str(job_id))
                continue
            jobs.append(full_status(row, errors))
        return BatchStatus(jobs=jobs, not_found=not_found)

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

    async def find(self, raw_id: str | None, caller: Caller) -> JobRow:
        """The caller's job; InvalidInput for a malformed id, JobNotFound, or RetryShortly."""
        job_id = parse_job_id(raw_id)
        if not self._connected():
            raise RetryShortly(NOT_CONNECTED)
        row = await self.reads.load_job(job_id)
        if row is None:
            row = (await self._folded_soon(job_id))[0]
        if not caller.may_see(row):  # another tenant's job: as if it did not exist
            raise JobNotFound()
        return row

    async def _folded_soon(self, job_id: UUID) -> tuple[JobRow, list[Any] | None]:
        """A job not in the view yet, once the fold has it (read-your-writes); JobNotFound when
        the fold has caught up without it, RetryShortly when that cannot be told yet."""
        try:
            async with asyncio.timeout(self._wait_s + 1):
                found = (await self._wait_for_folds([job_id])).get(job_id)
        except TimeoutError:  # Kafka did not answer the offset lookup: we cannot tell yet
            raise RetryShortly(NOT_FOLDED) from None
        if found is None:
            raise JobNotFound()
        return found


def parse_job_id(raw_id: str | None) -> UUID:
    """The job id a client sent; InvalidInput when missing or not a UUID."""
    if not raw_id:
        raise InvalidInput("jobid: required")
    try:
        return UUID(raw_id)
    except ValueError:
        raise InvalidInput("job_id: must be a UUID") from None


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


def full_status(row: JobRow, failures: Iterable[Sequence[Any]] | None) -> JobStatus:
    """The answer of `GET /api/status/{id}` (and of a progress event, a batch entry and a
    webhook): `status_body`, plus the first error per store when the job failed, from its
    failed images' (store_id, visit_index, image_index, error)."""
    if row.status != FAILED:
        return status_body(row)
    errors = [StoreError(**entry) for entry in first_error_per_store(failures or [])]
    return JobStatus(**_status_fields(row), error=errors)


def status_body(row: JobRow) -> JobStatus:
    """The job's status without its error list."""
    return JobStatus(**_status_fields(row))


def _status_fields(row: JobRow) -> dict[str, Any]:
    images = Images(total=row.total, succeeded=row.succeeded, failed=row.failed,
                    pending=max(0, row.total - row.succeeded - row.failed), started=row.started)
    return {"job_id": str(row.job_id), "status": row.status, "scheduled_time": iso(row.scheduled_time),
            "priority": row.priority, "images": images}
