"""Store master lookups: the whole table in memory (4,944 rows is small), refreshed
periodically; a miss is re-checked in the database so a freshly imported store is found."""

from __future__ import annotations

import time

from shared.runtime import Runtime


class StoreDirectory:
    def __init__(self, runtime: Runtime, refresh_s: float = 60.0) -> None:
        self._runtime = runtime
        self._refresh_s = refresh_s
        self._known: set[str] = set()
        self._loaded_at = 0.0

    async def exists(self, store_id: str) -> bool:
        if time.monotonic() - self._loaded_at > self._refresh_s:
            await self._reload()
        if store_id in self._known:
            return True
        async with self._runtime.pool.connection() as conn:
            row = await (await conn.execute("SELECT 1 FROM stores WHERE store_id = %s", (store_id,))).fetchone()
        if row:
            self._known.add(store_id)
        return row is not None

    async def _reload(self) -> None:
        async with self._runtime.pool.connection() as conn:
            rows = await (await conn.execute("SELECT store_id FROM stores")).fetchall()
        self._known = {r[0] for r in rows}
        self._loaded_at = time.monotonic()
