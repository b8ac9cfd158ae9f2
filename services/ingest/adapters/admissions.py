"""A job published without an acknowledgement in time: withdrawn (so its 503 is true) unless
the scheduler admitted it first (shared/admissions.py). Withdrawing also forgets the
Idempotency-Key that pointed at it, so the client's retry with that key makes a new job
instead of re-publishing the withdrawn one."""

from __future__ import annotations

from uuid import UUID

from services.ingest.adapters.idempotency import scoped_key
from shared.admissions import admit, withdraw_on
from shared.db import transaction
from shared.runtime import Runtime

# Retention (shared/retention.py): a decision is needed only while its record may still arrive
# (seconds after a missed deadline); kept as long as the jobs themselves.
EXPIRE_ADMISSIONS = (
    "DELETE FROM admissions WHERE id = ANY(ARRAY(SELECT id FROM admissions"
    " WHERE decided_at < now() - make_interval(secs => %(older_than_s)s::float8)"
    " LIMIT %(batch)s FOR UPDATE SKIP LOCKED))")


class JobAdmissions:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime  # its pool exists once the app has started

    async def withdraw(self, job_id: UUID, key: str | None, owner: str | None) -> bool:
        """True: withdrawn (it never runs); False: the scheduler admitted it first."""
        async with transaction(self._runtime.pool) as conn:
            withdrawn = await withdraw_on(conn, job_id)
            if withdrawn and key is not None:
                await conn.execute("DELETE FROM ingest_idempotency_keys WHERE key = %s AND job_id = %s",
                                   (scoped_key(key, owner), job_id))
        return withdrawn

    async def claim(self, job_id: UUID) -> bool:
        """The job is acknowledged: claim it as admitted unless a concurrent request with the same
        Idempotency-Key withdrew it first (False)."""
        async with transaction(self._runtime.pool) as conn:
            return not await admit(conn, [job_id])
