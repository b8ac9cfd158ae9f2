"""Store master lookups: the whole table in memory (4,944 rows is small), refreshed
periodically; a miss is re-checked in the database so a freshly imported store is found.

An empty table means the store master has not been imported yet (a fresh deployment, the
import still running): that is a transient condition, never a permanent `store not found`.
`exists` raises `StoreMasterNotLoaded` then, the task is retried, and `/readyz` says not
ready (check `store_master`) until the first import has committed (it is one transaction).
"""

from __future__ import annotations

import asyncio
import time

from services.processor.domain import StoreMasterNotLoaded
from shared.runtime import Runtime

__all__ = ["StoreDirectory"]


class StoreDirectory:
    def __init__(self, runtime: Runtime, refresh_s: float = 60.0) -> None:
        self._runtime = runtime
        self._refresh_s = refresh_s
        self._known: set[str] = set()
        self._loaded_at = 0.0
        self._reloading = asyncio.Lock()

    async def loaded(self) -> bool:
        """The store master has been imported (the table has rows)."""
        if not self._known:
            await self._reload()
        return bool(self._known)

    async def exists(self, store_id: str) -> bool:
        if time.monotonic() - self._loaded_at > self._refresh_s:
            # One reload for all: each of the hundreds of tasks under way when the refresh fell
            # due used to read the whole table (64 reloads of 4,944 rows in one burst). While one
            # task reloads, the others use the stores known so far (a miss is checked in the
            # table below anyway); with none known yet, they wait for that reload's outcome.
            if not self._reloading.locked():
                async with self._reloading:
                    await self._reload()
            elif not self._known:
                async with self._reloading:
                    pass
        if store_id in self._known:
            return True
        if not await self.loaded():
            raise StoreMasterNotLoaded("the store master has not been imported yet")
        async with self._runtime.pool.connection() as conn:
            row = await (await conn.execute("SELECT 1 FROM stores WHERE store_id = %s", (store_id,))).fetchone()
        if row:
            self._known.add(store_id)
        return row is not None

    async def _reload(self) -> None:
        async with self._runtime.pool.connection() as conn:
            rows = await (await conn.execute("SELECT store_id FROM stores")).fetchall()
        self._known = {r[0] for r in rows}
        if self._known:  # an empty table is looked at again on the next call
            self._loaded_at = time.monotonic()
