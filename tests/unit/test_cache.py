"""The per-URL dimension cache (services/processor/cache.py) with an injected clock."""

from __future__ import annotations

import asyncio

import pytest

from services.processor.adapters.cache import DimensionCache
from services.processor.domain import ImageError, Size


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_hit_before_ttl_miss_after() -> None:
    clock = Clock()
    cache = DimensionCache(ttl_s=60, max_entries=10, clock=clock)
    cache.put("u", Size(3, 4))
    clock.now += 59.9
    assert cache.get("u") == Size(3, 4)
    assert cache.hits == 1
    clock.now += 0.2
    assert cache.get("u") is None
    assert cache.hits == 1
    clock.now -= 10  # an expired entry is gone, not merely hidden
    assert cache.get("u") is None


def test_unknown_url_is_a_miss() -> None:
    cache = DimensionCache(ttl_s=60, max_entries=10, clock=Clock())
    assert cache.get("nope") is None
    assert cache.hits == 0


def test_zero_ttl_caches_nothing() -> None:
    cache = DimensionCache(ttl_s=0, max_entries=10, clock=Clock())
    cache.put("u", Size(1, 1))
    assert cache.get("u") is None


def test_lru_eviction_at_max_entries() -> None:
    cache = DimensionCache(ttl_s=60, max_entries=2, clock=Clock())
    cache.put("a", Size(1, 1))
    cache.put("b", Size(2, 2))
    assert cache.get("a") == Size(1, 1)  # a is now the most recently used
    cache.put("c", Size(3, 3))
    assert cache.get("b") is None
    assert cache.get("a") == Size(1, 1)
    assert cache.get("c") == Size(3, 3)


def test_put_again_refreshes_expiry_and_recency() -> None:
    clock = Clock()
    cache = DimensionCache(ttl_s=10, max_entries=2, clock=clock)
    cache.put("a", Size(1, 1))
    cache.put("b", Size(2, 2))
    clock.now += 8
    cache.put("a", Size(5, 5))
    cache.put("c", Size(3, 3))  # evicts b, the least recently used
    clock.now += 8
    assert cache.get("a") == Size(5, 5)
    assert cache.get("b") is None


async def test_concurrent_loads_of_one_url_are_coalesced() -> None:
    cache = DimensionCache(ttl_s=60, max_entries=10, clock=Clock())
    release, calls = asyncio.Event(), []

    async def load() -> Size:
        calls.append(1)
        await release.wait()
        return Size(7, 8)

    waiting = asyncio.gather(*(cache.get_or_load("u", load) for _ in range(5)))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(calls) == 1
    release.set()
    assert await waiting == [Size(7, 8)] * 5
    assert len(calls) == 1
    assert await cache.get_or_load("u", load) == Size(7, 8)
    assert len(calls) == 1


async def test_different_urls_load_separately() -> None:
    cache = DimensionCache(ttl_s=60, max_entries=10, clock=Clock())
    calls: list[str] = []

    def loader(url: str, size: Size):  # noqa: ANN202
        async def load() -> Size:
            calls.append(url)
            await asyncio.sleep(0)
            return size
        return load

    got = await asyncio.gather(cache.get_or_load("a", loader("a", Size(1, 2))),
                               cache.get_or_load("b", loader("b", Size(3, 4))))
    assert got == [Size(1, 2), Size(3, 4)]
    assert sorted(calls) == ["a", "b"]


async def test_failed_load_is_shared_by_waiters_and_not_cached() -> None:
    cache = DimensionCache(ttl_s=60, max_entries=10, clock=Clock())
    release, calls = asyncio.Event(), []

    async def failing() -> Size:
        calls.append(1)
        await release.wait()
        raise ImageError("HTTP 503", transient=True)

    waiting = asyncio.gather(*(cache.get_or_load("u", failing) for _ in range(3)), return_exceptions=True)
    await asyncio.sleep(0)
    release.set()
    results = await waiting
    assert len(calls) == 1
    assert all(isinstance(r, ImageError) and str(r) == "HTTP 503" for r in results)
    assert cache.get("u") is None

    async def succeeding() -> Size:
        calls.append(1)
        return Size(9, 9)

    assert await cache.get_or_load("u", succeeding) == Size(9, 9)
    assert len(calls) == 2


async def test_lone_failed_load_raises_and_leaves_nothing_in_flight() -> None:
    cache = DimensionCache(ttl_s=60, max_entries=10, clock=Clock())

    async def failing() -> Size:
        raise ImageError("not an image")

    with pytest.raises(ImageError, match="not an image"):
        await cache.get_or_load("u", failing)
    with pytest.raises(ImageError, match="not an image"):
        await cache.get_or_load("u", failing)
    assert cache.get("u") is None


def test_a_failed_load_leaves_no_cycle_holding_what_it_downloaded() -> None:
    """Freed by reference counting at once, not left for the garbage collector (whose young
    generation runs rarely in a service: shared/heap.py)."""
    import gc
    import weakref

    class Body:  # stands in for a downloaded image (bytes cannot be weakly referenced)
        pass

    seen: list[weakref.ref[Body]] = []

    async def load() -> Size:
        body = Body()
        seen.append(weakref.ref(body))
        raise ImageError("not an image (unrecognised format)")

    async def attempt() -> None:
        with pytest.raises(ImageError):
            await DimensionCache(ttl_s=60, max_entries=10).get_or_load("u", load)

    gc.disable()
    try:
        asyncio.run(attempt())
        assert seen and seen[0]() is None
    finally:
        gc.enable()
