"""Images pending (accepted, not yet final) per owner, for the `imagejobs_tenant_pending_images`
gauge (services/status/app.py). Kept apart from view.py, the fold's module: this read changes
nothing and answers no request. The partial index of migration 0006, which also serves
ingest's quota check, makes it a scan over open jobs only."""

from __future__ import annotations

from typing import Any

PENDING_BY_OWNER = (
    "SELECT owner, sum(GREATEST(total_images - succeeded - failed, 0))::bigint FROM status_jobs"
    " WHERE status IN ('scheduled', 'ongoing') AND NOT withdrawn GROUP BY owner")


async def pending_by_owner(runtime: Any) -> list[tuple[str | None, int]]:
    """(owner, images pending) of every owner with open jobs; owner None: jobs without auth."""
    async with runtime.pool.connection() as conn:
        return [(owner, int(images)) for owner, images in await (await conn.execute(PENDING_BY_OWNER)).fetchall()]
