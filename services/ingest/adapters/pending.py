"""A tenant's images pending (accepted, not yet final), read from the status view: the
source of truth the pending-images quota is checked against (services/ingest/quota.py).

One statement, one snapshot: the sum over the tenant's `scheduled` and `ongoing` jobs (an
scan of the open jobs in `status_jobs_tenant_pending`, migration 0006), and which of the jobs this
ingest accepted recently the view has folded, so those are not counted twice."""

from __future__ import annotations

from collections.abc import Collection
from uuid import UUID

from shared.runtime import Runtime

PENDING = "COALESCE(sum(GREATEST(total_images - succeeded - failed, 0)), 0)"
OPEN = "status IN ('scheduled', 'ongoing') AND NOT withdrawn"  # the index's predicate, verbatim
OF_OWNERS = (f"SELECT (SELECT {PENDING} FROM status_jobs WHERE owner = ANY(%(owners)s::text[]) AND {OPEN}),"
             " ARRAY(SELECT job_id FROM status_jobs WHERE job_id = ANY(%(recent)s::uuid[]) AND submitted)")
# without authentication every job belongs to the one tenant there is
OF_EVERYONE = (f"SELECT (SELECT {PENDING} FROM status_jobs WHERE {OPEN}),"
               " ARRAY(SELECT job_id FROM status_jobs WHERE job_id = ANY(%(recent)s::uuid[]) AND submitted)")


class PendingReader:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime  # its pool exists once the app has started

    async def pending(self, owners: Collection[str] | None, recent: list[UUID]) -> tuple[int, set[UUID]]:
        """(images pending over jobs recorded under `owners` (None: every job), the jobs of
        `recent` the view has)."""
        query = OF_EVERYONE if owners is None else OF_OWNERS
        async with self._runtime.pool.connection() as conn:
            row = await (await conn.execute(query, {"owners": list(owners or ()), "recent": recent})).fetchone()
        assert row is not None
        return int(row[0]), set(row[1])
