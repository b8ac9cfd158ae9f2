"""A missing store master is a transient condition, never a permanent `store not found`
(services/processor/stores.py), with an in-memory fake of the database."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

import pytest

from services.processor.adapters.stores import StoreDirectory
from services.processor.domain import StoreMasterNotLoaded
from services.processor.handlers.process import process
from shared.events import ImageFailed, ImageTask
from tests.handlers.fakes_processor import NoImages, deps_for


class FakeStoresTable:
    """Answers the two queries StoreDirectory makes, from a set of store ids."""

    def __init__(self) -> None:
        self.rows: set[str] = set()
        self.pool = self

    @asynccontextmanager
    async def connection(self) -> Any:
        yield self

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        rows = [(s,) for s in sorted(self.rows)] if not params else [(1,)] * (params[0] in self.rows)
        return _Cursor(rows)


class _Cursor:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows

    async def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    async def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None


def test_before_the_import_a_lookup_raises_and_readiness_says_no() -> None:
    table = FakeStoresTable()
    stores = StoreDirectory(table)  # type: ignore[arg-type]

    async def scenario() -> None:
        assert await stores.loaded() is False
        with pytest.raises(StoreMasterNotLoaded):
            await stores.exists("S00339218")
        table.rows = {"S00339218", "S01408764"}  # the import committed
        assert await stores.loaded() is True
        assert await stores.exists("S00339218") is True
        assert await stores.exists("NOPE") is False  # now a real miss
    asyncio.run(scenario())


def test_a_task_is_not_failed_while_the_store_master_is_missing() -> None:
    """process() raises (the worker retries the task) instead of recording `store not found`;
    once the master exists, an unknown store fails for real, without a download."""
    table = FakeStoresTable()
    deps = deps_for(NoImages(), stores=StoreDirectory(table))  # type: ignore[arg-type]
    task = ImageTask(job_id=uuid4(), task_id="t:0:0", visit_index=0, image_index=0, store_id="NOPE",
                     image_url="http://127.0.0.1:1/x.png", scheduled_time="2026-11-30T00:00:00Z")  # type: ignore[arg-type]
    with pytest.raises(StoreMasterNotLoaded):
        asyncio.run(process(task, deps))
    table.rows = {"S00339218"}
    outcome, _ = asyncio.run(process(task, deps))
    assert isinstance(outcome, ImageFailed) and outcome.reason == "store not found"


def test_a_refresh_that_falls_due_under_load_reads_the_table_once() -> None:
    """Hundreds of tasks look stores up at the moment the refresh falls due: one of them reads
    the whole table, the others wait for it, then everyone has the new rows."""
    class SlowTable(FakeStoresTable):
        full_reads = 0

        async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
            if not params:
                self.full_reads += 1
                await asyncio.sleep(0.01)  # the read takes a while: the others arrive meanwhile
            return await super().execute(sql, params)

    table = SlowTable()
    table.rows = {"S00339218"}
    stores = StoreDirectory(table, refresh_s=0.2)  # type: ignore[arg-type]

    async def scenario() -> list[bool]:
        assert await stores.loaded()
        table.full_reads = 0
        table.rows = {"S00339218", "S01408764"}  # a new import
        await asyncio.sleep(0.25)  # the refresh is due
        return await asyncio.gather(*(stores.exists("S01408764") for _ in range(200)))
    assert asyncio.run(scenario()) == [True] * 200
    assert table.full_reads == 1
