"""Per-URL dimension cache with a TTL, coalescing concurrent lookups of the same URL.

The same image URL in many visits or jobs is downloaded once per TTL. Only successes are
cached: a failure may be transient, and a permanent one is cheap to find again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from cachetools import TTLCache

from services.processor.domain import Size


class DimensionCache:
    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        # expiry and least-recently-used eviction are cachetools'; coalescing is ours
        self._entries: TTLCache[str, Size] = TTLCache(max(1, max_entries), max(ttl_s, 1e-9), timer=clock)
        self._in_flight: dict[str, asyncio.Future[Size]] = {}
        self.hits = 0

    def get(self, url: str) -> Size | None:
        self._entries.expire()  # expired entries go now (amortised), not merely hidden
        size = self._entries.get(url)
        if size is not None:
            self.hits += 1
        return size

    def put(self, url: str, size: Size) -> None:
        if self.ttl_s > 0:
            self._entries[url] = size

    async def get_or_load(self, url: str, load: Callable[[], Awaitable[Size]]) -> Size:
        cached = self.get(url)
        if cached is not None:
            return cached
        if url in self._in_flight:
            return await asyncio.shield(self._in_flight[url])
        future: asyncio.Future[Size] = asyncio.get_running_loop().create_future()
        self._in_flight[url] = future
        try:
            size = await load()
            self.put(url, size)
            future.set_result(size)
            return size
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._in_flight[url]
            # the failure's traceback holds this frame: without this, frame -> future -> exception
            # -> traceback -> frame is a cycle that keeps the failed download's body alive until
            # the garbage collector runs, instead of freeing it now (shared/heap.py)
            future = None  # noqa: F841
