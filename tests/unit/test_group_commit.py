"""Group commit (shared/group_commit.py): a lone write goes at once; writes that arrive while
one runs go together in the next; a failed write fails exactly the callers it carried."""

from __future__ import annotations

import asyncio

import pytest

from shared.group_commit import GroupCall, GroupCommit


class Store:
    """A flush that records what it wrote and can be held open or made to fail."""

    def __init__(self) -> None:
        self.writes: list[list[str]] = []
        self.open = asyncio.Event()
        self.open.set()
        self.refused: set[str] = set()  # items the store refuses (the write carrying one fails)

    async def flush(self, items: list[str]) -> None:
        self.writes.append(items)
        await self.open.wait()
        if self.refused.intersection(items):
            raise RuntimeError("the database said no")


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_lone_write_goes_at_once() -> None:
    async def scenario() -> list[list[str]]:
        store = Store()
        await GroupCommit(store.flush).write(["a", "b"])
        return store.writes
    assert asyncio.run(scenario()) == [["a", "b"]]


def test_writes_arriving_during_a_write_go_together_in_the_next() -> None:
    async def scenario() -> tuple[list[list[str]], list[bool]]:
        store = Store()
        group = GroupCommit(store.flush)
        store.open.clear()
        first = asyncio.create_task(group.write(["a"]))
        await settle()
        later = [asyncio.create_task(group.write([x])) for x in ("b", "c", "d")]
        await settle()
        waiting = [t.done() for t in (first, *later)]  # nobody returns before its write is done
        store.open.set()
        await asyncio.gather(first, *later)
        return store.writes, waiting
    writes, waiting = asyncio.run(scenario())
    assert writes == [["a"], ["b", "c", "d"]]
    assert waiting == [False, False, False, False]


def test_a_failed_write_fails_the_callers_it_carried_and_the_next_write_goes() -> None:
    async def scenario() -> tuple[list[BaseException | None], list[list[str]]]:
        store = Store()
        store.refused = {"b"}
        group = GroupCommit(store.flush)
        store.open.clear()
        first = asyncio.create_task(group.write(["a"]))
        await settle()
        carried = [asyncio.create_task(group.write([x])) for x in ("b", "c")]
        await settle()
        store.open.set()
        await first
        results = await asyncio.gather(*carried, return_exceptions=True)
        await group.write(["e"])
        return [r if isinstance(r, BaseException) else None for r in results], store.writes
    results, writes = asyncio.run(scenario())
    assert [str(r) for r in results] == ["the database said no"] * 2
    assert writes == [["a"], ["b", "c"], ["e"]]


def test_a_cancelled_caller_leaves_the_others_written() -> None:
    async def scenario() -> list[list[str]]:
        store = Store()
        group = GroupCommit(store.flush)
        store.open.clear()
        first = asyncio.create_task(group.write(["a"]))
        await settle()
        gone = asyncio.create_task(group.write(["b"]))
        kept = asyncio.create_task(group.write(["c"]))
        await settle()
        gone.cancel()
        store.open.set()
        await asyncio.gather(first, kept)
        with pytest.raises(asyncio.CancelledError):
            await gone
        return store.writes
    assert asyncio.run(scenario()) == [["a"], ["b", "c"]]  # b's write stands: writes are idempotent


def test_with_a_linger_writes_close_together_go_in_one() -> None:
    async def scenario() -> tuple[list[list[str]], list[list[str]]]:
        store = Store()
        group = GroupCommit(store.flush, linger_s=0.5)  # far longer than a busy loop stalls
        first = asyncio.create_task(group.write(["a"]))
        await settle()
        second = asyncio.create_task(group.write(["b"]))
        await settle()
        lingering = list(store.writes)
        await asyncio.gather(first, second, group.write(["c"]))
        return lingering, store.writes
    lingering, writes = asyncio.run(scenario())
    assert lingering == []
    assert writes == [["a", "b", "c"]]


def test_a_group_call_answers_each_caller_with_its_own_items_result() -> None:
    async def scenario() -> tuple[list[list[str]], list[str]]:
        store = Store()

        async def flush(items: list[str]) -> list[str]:
            await store.flush(items)
            return [item.upper() for item in items]
        group: GroupCall[str, str] = GroupCall(flush)
        store.open.clear()
        first = asyncio.create_task(group.call("a"))
        await settle()
        later = [asyncio.create_task(group.call(x)) for x in ("b", "c", "d")]
        await settle()
        store.open.set()
        return store.writes, list(await asyncio.gather(first, *later))
    writes, answers = asyncio.run(scenario())
    assert writes == [["a"], ["b", "c", "d"]]
    assert answers == ["A", "B", "C", "D"]


def test_a_failed_group_call_fails_the_callers_it_carried() -> None:
    async def scenario() -> list[object]:
        store = Store()
        store.refused = {"c"}

        async def flush(items: list[str]) -> list[str]:
            await store.flush(items)
            return list(items)
        group: GroupCall[str, str] = GroupCall(flush)
        store.open.clear()
        first = asyncio.create_task(group.call("a"))
        await settle()
        later = [asyncio.create_task(group.call(x)) for x in ("b", "c")]
        await settle()
        store.open.set()
        return list(await asyncio.gather(first, *later, return_exceptions=True))
    first, *later = asyncio.run(scenario())
    assert first == "a"
    assert all(isinstance(outcome, RuntimeError) for outcome in later)


def test_a_flush_answering_the_wrong_number_of_results_fails_its_callers_instead_of_hanging() -> None:
    async def scenario() -> list[object]:
        async def flush(items: list[str]) -> list[str]:
            return items[:-1]  # one answer short
        group: GroupCall[str, str] = GroupCall(flush)
        async with asyncio.timeout(2):
            return list(await asyncio.gather(group.call("a"), group.call("b"), return_exceptions=True))
    assert all(isinstance(outcome, ValueError) for outcome in asyncio.run(scenario()))
