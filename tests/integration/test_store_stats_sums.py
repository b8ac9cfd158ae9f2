"""Store statistics' tables in PostgreSQL (services/storestats/adapters/store.py): each window's
sums are kept as its images are counted, and what the service reads back from them equals an
exact recount of the outcomes (services/storestats/domain.py::recount), repeats included; the
latest mean is the latest window's; pruning takes a window's sums with its rows; and a database
from before the sums existed gets them from the rows it kept."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from uuid import uuid4

import psycopg
from psycopg_pool import AsyncConnectionPool

from services.storestats.adapters import store
from services.storestats.domain import CountedImage, WindowStats, recount, window_start
from shared.db import make_pool
from tests.support.stack import Infra, Stack

WINDOW_S = 60
T = TypeVar("T")


def _on_pool(database_url: str, work: Callable[[AsyncConnectionPool], Awaitable[T]]) -> T:
    async def scenario() -> T:
        pool = make_pool(database_url)
        await pool.open()
        try:
            await store.create_tables(pool)
            return await work(pool)
        finally:
            await pool.close()
    return asyncio.run(scenario())


def _image(store_id: str, at: datetime, perimeter: int | None = None, reason: str | None = None,
           task_id: str | None = None) -> CountedImage:
    return CountedImage(task_id or uuid4().hex, store_id, at, perimeter, reason)


def _by_window(stats: list[WindowStats]) -> dict[tuple[str, float], WindowStats]:
    return {(s.store_id, s.window_start): s for s in stats}


def test_window_sums_equal_a_recount_repeats_counted_once_in_their_first_window(infra: Infra) -> None:
    stack = Stack(infra)
    shop, other = f"S-{uuid4().hex[:8]}", f"S-{uuid4().hex[:8]}"
    old = datetime.now(UTC).replace(second=5, microsecond=0) - timedelta(minutes=3)
    new = old + timedelta(minutes=2)
    first = [_image(shop, old, 100), _image(shop, old, 40), _image(shop, old, reason="HTTP 404"),
             _image(other, old, 7), _image(shop, new, 10)]
    # the same tasks again (one of them now in a later window), and new ones in both windows
    repeats = [_image(shop, new, 100, task_id=first[0].task_id), _image(shop, old, reason="HTTP 404",
                                                                         task_id=first[2].task_id)]
    second = [*repeats, _image(shop, old, 60), _image(shop, new, reason="store not found"), _image(shop, new, 30)]

    async def work(pool: AsyncConnectionPool) -> tuple[list[WindowStats], list[WindowStats], dict[str, float | None]]:
        one = await store.count(pool, first, WINDOW_S)
        two = await store.count(pool, second, WINDOW_S)
        totals = await store.totals(pool, [shop, other])
        return one, two, {s: t.latest_mean for s, t in totals.items()}

    one, two, means = _on_pool(stack.database_url, work)
    exact = recount([*first, *second], WINDOW_S)
    assert _by_window(one) == recount(first, WINDOW_S)
    assert _by_window(two) == {key: exact[key] for key in _by_window(two)}
    assert set(_by_window(two)) == {(shop, exact_key[1]) for exact_key in exact if exact_key[0] == shop}
    old_window = exact[(shop, window_start(old, WINDOW_S))]
    assert (old_window.succeeded, old_window.failed, old_window.perimeter_sum) == (3, {"HTTP 404": 1}, 200)
    assert means == {shop: 20.0, other: 7.0}  # the latest window with a success: (10 + 30) / 2


def test_pruning_takes_a_windows_sums_with_its_rows(infra: Infra) -> None:
    stack = Stack(infra)
    shop = f"S-{uuid4().hex[:8]}"
    now = datetime.now(UTC)
    images = [_image(shop, now - timedelta(hours=2), 8), _image(shop, now, 12)]

    async def work(pool: AsyncConnectionPool) -> tuple[int, int, float | None]:
        await store.count(pool, images, WINDOW_S)
        pruned = await store.prune(pool, keep_s=3600)
        [again] = await store.count(pool, images[:1], WINDOW_S)  # forgotten, so it counts afresh
        totals = await store.totals(pool, [shop])
        return pruned, again.succeeded, totals[shop].latest_mean

    pruned, recounted, mean = _on_pool(stack.database_url, work)
    assert pruned == 1
    assert recounted == 1  # its window's sums went with its row: not 2
    assert mean == 12.0
    with psycopg.connect(stack.database_url) as conn:
        windows = conn.execute("SELECT count(*) FROM storestats_windows WHERE store_id = %s", (shop,)).fetchone()
    assert windows == (2,)


def test_a_database_from_before_the_sums_gets_them_from_the_rows_it_kept(infra: Infra) -> None:
    stack = Stack(infra)
    shop = f"S-{uuid4().hex[:8]}"
    at = datetime.now(UTC).replace(second=30, microsecond=0)
    start = datetime.fromtimestamp(window_start(at, WINDOW_S), UTC)
    with psycopg.connect(stack.database_url, autocommit=True) as conn:  # as the service left it before
        conn.execute(store.SCHEMA)
        conn.execute("INSERT INTO storestats_outcomes (task_id, store_id, window_start, reason, perimeter)"
                     " VALUES ('t1', %s, %s, NULL, 50), ('t2', %s, %s, NULL, 70), ('t3', %s, %s, 'HTTP 500', NULL)",
                     (shop, start, shop, start, shop, start))

    async def work(pool: AsyncConnectionPool) -> list[WindowStats]:
        return await store.count(pool, [_image(shop, at, 30)], WINDOW_S)

    [window] = _on_pool(stack.database_url, work)
    assert (window.succeeded, window.failed, window.perimeter_sum) == (3, {"HTTP 500": 1}, 150)
