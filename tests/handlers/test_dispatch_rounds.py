"""When the dispatcher (services/scheduler/handlers/dispatch.py) starts a round: a backlog
refills a full window in rounds of an eighth of it, but a tenant with work and next to nothing
out (less than an eighth of its weighted share) gets a round at the first free place; a round
takes at most an eighth of the window, hands its tasks out and stores the cursors. No Kafka, no
database: the ports are in-memory fakes (fakes_scheduler.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from services.scheduler.domain import DispatchRow, task_partition
from services.scheduler.handlers import dispatch
from services.scheduler.handlers.dispatch import Dispatcher
from services.scheduler.settings import SchedulerSettings
from shared.events import JobSubmitted, Visit
from tests.handlers.fakes_scheduler import FakeTable, FakeTaskSender

WINDOW = 16


def job(owner: str, images: int) -> JobSubmitted:
    urls = tuple(f"http://x/{i}" for i in range(images))
    return JobSubmitted(job_id=uuid4(), scheduled_time=datetime.now(UTC), owner=owner,
                        visits=(Visit(store_id="S1", image_urls=urls),))


def dispatcher_with_window_full_of(owner: str, out: int, window: int = WINDOW, weights: str = "") -> Dispatcher:
    settings = SchedulerSettings(dispatch_window=window, tenant_weights=weights)
    dispatcher = Dispatcher(settings, FakeTable(), FakeTaskSender(), lambda: 1.0)
    dispatcher.add(job(owner, 500), partition=0)
    for n in range(out):
        dispatcher.out.dispatched(f"{owner}-task-{n}", owner, now=0.0, partition=0)
    return dispatcher


def test_a_lone_backlog_waits_for_an_eighth_of_the_window() -> None:
    dispatcher = dispatcher_with_window_full_of("team-a", WINDOW - 1)
    assert dispatcher.room() == 1
    assert not dispatcher.worth_a_round(dispatcher.room())
    dispatcher.out.free(["team-a-task-0"])  # a second place free: 2 x 8 >= 16
    assert dispatcher.worth_a_round(dispatcher.room())


def test_a_tenant_with_nothing_out_gets_a_round_at_the_first_free_place() -> None:
    dispatcher = dispatcher_with_window_full_of("team-a", WINDOW)
    dispatcher.add(job("team-b", 1), partition=1)
    assert not dispatcher.worth_a_round(dispatcher.room())  # no place free at all
    dispatcher.out.free(["team-a-task-0"])
    assert dispatcher.worth_a_round(dispatcher.room())
    # once it has one out, it waits as others do
    dispatcher.out.dispatched("team-b-task", "team-b", now=1.0, partition=0)
    dispatcher.out.free(["team-a-task-1"])
    assert not dispatcher.worth_a_round(dispatcher.room())


def test_a_tenant_far_below_its_share_gets_a_round_at_the_first_free_place() -> None:
    """Its earlier task still counts as out (the processors' committed offset has not passed it:
    other tenants' earlier tasks in its partition are still running), yet it has next to nothing
    of its share: half of 64 places for two tenants of equal weight, an eighth of that is 4."""
    dispatcher = dispatcher_with_window_full_of("team-a", 63, window=64)
    dispatcher.out.dispatched("team-b-task-0", "team-b", now=0.0, partition=0)
    dispatcher.add(job("team-b", 1), partition=1)
    assert not dispatcher.worth_a_round(dispatcher.room())  # no place free at all
    dispatcher.out.free(["team-a-task-0"])
    assert dispatcher.worth_a_round(dispatcher.room())  # 1 out < 4
    for n in range(1, 4):
        dispatcher.out.dispatched(f"team-b-task-{n}", "team-b", now=1.0, partition=0)
        dispatcher.out.free([f"team-a-task-{n}"])
    assert not dispatcher.worth_a_round(dispatcher.room())  # 4 out: it waits for a round as others do


def test_weights_set_the_share_a_starved_tenant_is_measured_against() -> None:
    """team-a weighs 7, team-b 1: team-b's share of 64 places is 8, an eighth of it 1, so with one
    task out it is not starved; team-a, with 1 of its share of 56 out, is."""
    dispatcher = dispatcher_with_window_full_of("team-b", 63, window=64, weights="team-a=7")
    dispatcher.out.dispatched("team-a-task-0", "team-a", now=0.0, partition=0)
    dispatcher.out.free(["team-b-task-0"])
    assert not dispatcher.worth_a_round(dispatcher.room())  # only team-b queued, at its share and more
    dispatcher.add(job("team-a", 1), partition=1)
    assert dispatcher.worth_a_round(dispatcher.room())  # team-a: 1 out < 56 / 8


async def first_round(dispatcher: Dispatcher, table: FakeTable) -> None:
    """Let the dispatcher run until its first round's cursors are stored, then stop it."""
    running = asyncio.create_task(dispatcher.run())
    for _ in range(200):
        if table.cursors:
            break
        await asyncio.sleep(0.01)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)


def test_rounds_of_an_eighth_of_the_window_fill_it_and_the_loop_yields_between_rounds() -> None:
    """A burst's first tasks reach the producer, and the event loop runs other tasks (the
    producer's sender among them), before the rest of the window is made into tasks; the running
    total goes to the job's partition and the cursor is stored. (The fake producer takes a record
    when it is handed over: that the real one writes it between rounds is what the burst's
    timeline measured, docs/benchmarks.md.)"""
    table, sender = FakeTable(), FakeTaskSender()
    settings = SchedulerSettings(dispatch_window=WINDOW)
    dispatcher = Dispatcher(settings, table, sender, lambda: 1.0)
    big = job("team-a", WINDOW)
    dispatcher.add(big, partition=2)
    seen_by_the_loop: list[int] = []

    async def fill() -> None:
        running = asyncio.create_task(dispatcher.run())
        deadline = asyncio.get_running_loop().time() + 5.0
        try:
            while table.cursors.get(big.job_id) != WINDOW and asyncio.get_running_loop().time() < deadline:
                seen_by_the_loop.append(sum(1 for r in sender.sent if r[0] == settings.topics.tasks))
                await asyncio.sleep(0)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    asyncio.run(fill())  # the job's last round stores its cursor
    assert dispatcher.round_size(WINDOW) == WINDOW // 8 == 2
    assert dispatch.ROUND_PARTS <= dispatch.MAX_UNCONFIRMED_ROUNDS  # a window's rounds never wait for each other
    assert [n for n in sorted(set(seen_by_the_loop)) if n] == list(range(2, WINDOW + 1, 2))  # round after round
    assert len(dispatcher.out) == WINDOW and dispatcher.room() == 0
    assert {r[3] for r in sender.sent if r[0] == settings.topics.jobs} == {2}  # the running totals: the job's partition
    assert table.cursors == {big.job_id: WINDOW}


def test_a_round_sends_its_tasks_to_the_partitions_with_fewest_out() -> None:
    """Half of the tasks partitions hold a processor's unfinished work, the other half nothing
    (their processor was faster): a new job's tasks go to the idle ones until all are level."""
    table, sender = FakeTable(), FakeTaskSender(count=4)
    settings = SchedulerSettings(dispatch_window=64)
    dispatcher = Dispatcher(settings, table, sender, lambda: 1.0)
    for n in range(16):
        dispatcher.out.dispatched(f"earlier-{n}", "team-a", now=0.0, partition=n % 2)
    big = job("team-a", 24)
    dispatcher.add(big, partition=0)

    async def dispatch_all() -> None:
        running = asyncio.create_task(dispatcher.run())
        try:
            async with asyncio.timeout(5):
                while table.cursors.get(big.job_id) != 24:
                    await asyncio.sleep(0.01)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    asyncio.run(dispatch_all())
    sent = [partition for topic, _, _, partition in sender.sent if topic == settings.topics.tasks]
    assert sorted(sent[:16]) == [2] * 8 + [3] * 8  # the idle partitions first
    assert sent[16:] == [task_partition(big.job_id, i, 4) for i in range(16, 24)]  # level: the job's own order
    assert dispatcher.out.loads(4) == [10, 10, 10, 10]


def test_revoked_partitions_store_their_cursors_and_drop_their_jobs() -> None:
    table = FakeTable()
    dispatcher = Dispatcher(SchedulerSettings(dispatch_window=WINDOW), table, FakeTaskSender(), lambda: 1.0)
    kept, lost = job("team-a", 40), job("team-b", 40)
    dispatcher.add(kept, partition=0)
    dispatcher.add(lost, partition=1)

    async def round_then_revoke() -> None:
        await first_round(dispatcher, table)
        await dispatcher.forget({1})
    asyncio.run(round_then_revoke())
    assert table.cursors[lost.job_id] > 0 and lost.job_id not in dispatcher.queue
    assert kept.job_id in dispatcher.queue


def test_a_job_resumed_with_every_task_already_dispatched_leaves_nothing_behind() -> None:
    """A crash after the last round's cursors were stored but before the release was marked: the
    job is released again with all its tasks dispatched. Nothing is queued, and nothing about it
    is kept (it was kept until its partition was revoked)."""
    dispatcher = Dispatcher(SchedulerSettings(dispatch_window=WINDOW), FakeTable(), FakeTaskSender(), lambda: 1.0)
    done = job("team-a", 3)
    dispatcher.add(done, partition=0, dispatched=3)
    assert len(dispatcher.queue) == 0 and done.job_id not in dispatcher.queue
    assert done.job_id not in dispatcher._jobs and done.job_id not in dispatcher._events  # noqa: SLF001
    half = job("team-a", 3)
    dispatcher.add(half, partition=0, dispatched=1)
    assert half.job_id in dispatcher._jobs and len(dispatcher.queue) == 2  # noqa: SLF001 - two left: queued


def test_a_place_held_past_its_lease_is_freed_while_other_tasks_keep_finishing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A task whose offset is never passed (the processors' group reset, say) frees its place
    after LEASE_S even while every other task finishes at once and wakes the dispatcher."""
    monkeypatch.setattr(dispatch, "LEASE_S", 0.3)
    monkeypatch.setattr(dispatch, "EXPIRE_EVERY_S", 0.05)
    sender = FakeTaskSender()
    dispatcher = Dispatcher(SchedulerSettings(dispatch_window=WINDOW), FakeTable(), sender, lambda: 1.0)
    dispatcher.add(job("team-a", 2000), partition=0)

    async def held_until_freed() -> float:
        running = asyncio.create_task(dispatcher.run())
        loop = asyncio.get_running_loop()
        try:
            while not sender.sent:
                await asyncio.sleep(0.01)
            stuck = sender.sent[0][2].decode()
            started = loop.time()
            while loop.time() - started < 5.0:
                sent = [key.decode() for topic, _, key, _ in sender.sent if topic.endswith(".tasks")]
                dispatcher.out.free([task_id for task_id in sent if task_id != stuck])  # the others finish
                dispatcher.wakeup.set()
                if len(dispatcher.out) == 0:  # the stuck one too: its lease ran out
                    return loop.time() - started
                await asyncio.sleep(0.02)
            return float("inf")
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    assert asyncio.run(held_until_freed()) < 2.0


def test_a_job_dropped_while_its_round_loads_it_is_neither_sent_nor_counted() -> None:
    """The partition of a job taken into a round is revoked while the round reads its event back
    from the schedule: the round sends the other jobs' tasks, skips it, and counts what it sent
    (it counted by the dropped job's tenant and raised KeyError, stopping the dispatcher)."""

    class SlowTable(FakeTable):
        def __init__(self) -> None:
            super().__init__()
            self.reading, self.release = asyncio.Event(), asyncio.Event()

        async def job_events(self, job_ids: list[UUID]) -> list[str]:
            self.reading.set()
            await self.release.wait()
            return await super().job_events(job_ids)

    async def scenario() -> tuple[UUID, list[str]]:
        table, sender = SlowTable(), FakeTaskSender()
        settings = SchedulerSettings(dispatch_window=WINDOW)
        dispatcher = Dispatcher(settings, table, sender, lambda: 1.0)
        kept, lost = job("team-a", 2), job("team-b", 2)
        table.events.update({kept.job_id: kept, lost.job_id: lost})
        dispatcher.add_loaded([DispatchRow(kept.job_id, 0, "team-a", 3, 2, 0),
                               DispatchRow(lost.job_id, 1, "team-b", 3, 2, 0)])
        round_ = asyncio.create_task(dispatcher._round(dispatcher.queue.take(4)))  # noqa: SLF001
        await asyncio.wait_for(table.reading.wait(), 5)
        await dispatcher.forget({1})
        table.release.set()
        await asyncio.wait_for(round_, 5)
        await dispatcher.wait_confirmed()
        return kept.job_id, [key.decode() for topic, _, key, _ in sender.sent if topic == settings.topics.tasks]

    kept_id, sent = asyncio.run(scenario())
    assert len(sent) == 2 and all(task_id.startswith(f"{kept_id}:") for task_id in sent)
