"""Status reads from memory: `GET /api/status/{id}` without a database query, while that is safe.

A client that polls its jobs is the largest cost a client puts on the system: each read was a
query, and PostgreSQL and the status process spent more CPU answering a burst's polls than on
folding the burst (`make bench`, issue 20). Most of those reads ask a question whose answer has
not changed since the last one.

The rule that keeps a cached answer true: while this process's fold holds every partition
(`domain.FoldCoverage`), nothing but that fold changes a job's status, and it announces the jobs
each batch touches before its transaction (`folding`) and again once it has committed
(`folded`). From the first announcement until the job's cached answer has been read again
(one query for all the touched jobs), its reads go to the database, so no read answers an
older status than one the view had committed before the read began: not even in the moment
between the commit and the fold's coroutine resuming, nor while a commit whose reply was lost
is retried. A job read while a fold touched it is not cached from that read.
When the fold's partitions move, the cache is emptied and stays off until they are all here
again; with several status instances (each holds some partitions) every read is a query, as
before.

An answer is also never older than STATUS_READ_CACHE_AGE_S (5 s): a change made by anything
else is seen within that: retention deleting an expired job, an instance that lost its
partitions still finishing a commit, or the time between this process being dropped from the
group (a session timeout while its fold was stuck) and its consumer learning so at the next
rejoin, when the revocation empties the cache. At most STATUS_READ_CACHE_JOBS jobs are held
(oldest first out); 0 turns the cache off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

from prometheus_client import Counter

from services.status.domain import FoldCoverage, JobRow
from services.status.ports import ManyJobReads
from shared.group_commit import GroupCall

log = logging.getLogger(__name__)
READS = Counter("imagejobs_status_reads_total", "Status reads, by where they were answered from", ["source"])
FROM_MEMORY, FROM_VIEW = READS.labels("memory"), READS.labels("view")
REFRESH_CHUNK = 5000  # ids per refresh query

Found = tuple[JobRow, list[Any] | None]  # a job and, when it failed, its failed images


class ReadCache:
    def __init__(self, reads: ManyJobReads, coverage: FoldCoverage, max_jobs: int, max_age_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._reads, self._coverage, self._max_jobs, self._max_age_s = reads, coverage, max_jobs, max_age_s
        self._clock = clock
        self._entries: dict[UUID, tuple[Found, float]] = {}  # job -> (its answer, when read); oldest first
        self._loading: dict[UUID, bool] = {}  # reads under way: False once a fold touched the job meanwhile
        self._folding: Tally[UUID] = Tally()  # jobs a fold under way may be changing
        self._stale: set[UUID] = set()  # cached, touched by a committed fold, not read again yet
        self._refreshing: set[UUID] = set()  # being read again now
        self._wakeup = asyncio.Event()
        self._queries = GroupCall(self._query_many)

    @property
    def on(self) -> bool:
        return self._max_jobs > 0 and self._coverage.complete

    async def find(self, job_id: UUID) -> Found | None:
        """The job as the view holds it (None: not in the view), from memory when that is safe."""
        if not self.on or job_id in self._folding or job_id in self._stale or job_id in self._refreshing:
            return await self._query(job_id)
        cached = self._entries.get(job_id)
        if cached is not None and self._clock() - cached[1] <= self._max_age_s:
            FROM_MEMORY.inc()
            return cached[0]
        first = job_id not in self._loading
        if first:
            self._loading[job_id] = True
        try:
            found = await self._query(job_id)
        finally:
            untouched = self._loading.pop(job_id, False) if first else False
        if found is not None and untouched and self.on:
            self._keep(job_id, found)
        return found

    async def _query(self, job_id: UUID) -> Found | None:
        """One query for the reads that arrive together (`GroupCall`: the query starts after
        each of them began, so none answers older than the view was when it began). A burst
        polled over 16 connections spent a third of the status process's reads and most of
        PostgreSQL's extra work on a query per read."""
        FROM_VIEW.inc()
        return await self._queries.call(job_id)

    async def _query_many(self, job_ids: list[UUID]) -> list[Found | None]:
        found = {row.job_id: (row, errors) for row, errors in await self._reads.load_jobs(list(set(job_ids)))}
        return [found.get(job_id) for job_id in job_ids]

    def _keep(self, job_id: UUID, found: Found) -> None:
        self._entries.pop(job_id, None)  # re-inserted last: the oldest stays first
        if len(self._entries) >= self._max_jobs:
            del self._entries[next(iter(self._entries))]
        self._entries[job_id] = (found, self._clock())

    def folding(self, job_ids: Iterable[UUID]) -> None:
        """This process's fold is about to write `job_ids` (each call is ended by `folded`)."""
        for job_id in job_ids:
            self._folding[job_id] += 1
            if job_id in self._loading:
                self._loading[job_id] = False

    def folded(self, job_ids: Iterable[UUID]) -> None:
        """The fold that announced `job_ids` by `folding` has committed (or given up)."""
        for job_id in job_ids:
            if self._folding[job_id] <= 1:
                del self._folding[job_id]
            else:
                self._folding[job_id] -= 1
        self.changed(job_ids)

    def changed(self, job_ids: Iterable[UUID]) -> None:
        """The view has committed changes to `job_ids`: their cached answers are read again."""
        for job_id in job_ids:
            if job_id in self._loading:
                self._loading[job_id] = False
            if job_id in self._entries:
                self._stale.add(job_id)
        if self._stale:
            self._wakeup.set()

    def clear(self) -> None:
        """The fold's partitions moved: nothing cached can be trusted."""
        self._entries.clear()
        self._stale.clear()
        for job_id in self._loading:
            self._loading[job_id] = False

    async def run(self) -> None:
        """Read the touched jobs again, all of them in one query; when that fails, they are
        dropped (their reads go to the database)."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            self._refreshing, self._stale = self._stale, set()
            try:
                await self._refresh(list(self._refreshing))
            except Exception as exc:  # noqa: BLE001 - the view is briefly unreachable: read on demand
                log.warning("refreshing cached statuses failed (%s); they are read on demand", exc)
                for job_id in self._refreshing:
                    self._entries.pop(job_id, None)
            finally:
                self._refreshing = set()

    async def _refresh(self, job_ids: list[UUID]) -> None:
        now = self._clock()
        for start in range(0, len(job_ids), REFRESH_CHUNK):
            chunk = job_ids[start:start + REFRESH_CHUNK]
            for job_id, found in zip(chunk, await self._query_many(chunk), strict=True):
                if job_id not in self._entries or not self.on:
                    continue  # pushed out, or cleared meanwhile
                if found is not None:
                    self._entries[job_id] = (found, now)
                else:
                    del self._entries[job_id]
