"""Batch status and progress streams (services/status/handlers/{jobs,progress}.py) in-process:
the fake view (tests/handlers/fakes_status.py) whose rows the test moves, no Kafka, no database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID, uuid4

import pytest

from services.status.domain import (
    MAX_BATCH_IDS,
    Caller,
    FoldCoverage,
    JobNotFound,
    RetryShortly,
    parse_job_ids,
    progress_id,
)
from services.status.handlers.progress import (
    COVERED_POLL_S,
    HEARTBEAT,
    JobProgress,
    Offered,
    Opened,
    ProgressHub,
    Watch,
)
from shared.api import JobStatus, StoreError
from shared.schedule_time import InvalidInput
from tests.handlers.fakes_status import FakeView, reader

ANYONE = Caller(None, keys_on=False)
TEAM_A = Caller("team-a", keys_on=True)


# -- batch status ---------------------------------------------------------------------------
def test_batch_answers_in_the_order_asked_and_lists_unknown_and_foreign_ids_as_not_found() -> None:
    view = FakeView()
    mine, theirs, failed = view.add(owner="team-a"), view.add(owner="team-b"), view.add("failed", "team-a")
    view.errors[failed] = [["S2", 1, 0, "b"], ["S1", 0, 1, "a"]]
    unknown = str(uuid4())
    asked = [str(failed), unknown, str(mine), str(theirs), str(mine).upper()]
    answer = asyncio.run(reader(view).statuses({"job_ids": asked}, TEAM_A))
    assert [job.job_id for job in answer.jobs] == [str(failed), str(mine)]
    assert answer.jobs[0].error == [StoreError(store_id="S1", error="a"), StoreError(store_id="S2", error="b")]
    assert "error" not in answer.jobs[1].model_dump()
    assert answer.not_found == [unknown, str(theirs)]
    assert view.queries == 2  # the batch, then once more after waiting for the fold of the missing


def test_batch_of_known_jobs_is_one_query() -> None:
    view = FakeView()
    ids = [str(view.add()) for _ in range(MAX_BATCH_IDS)]
    answer = asyncio.run(reader(view).statuses({"job_ids": ids}, ANYONE))
    assert len(answer.jobs) == MAX_BATCH_IDS and view.queries == 1


def test_a_batch_before_the_service_is_connected_says_retry() -> None:
    view = FakeView()
    with pytest.raises(RetryShortly, match="not connected yet"):
        asyncio.run(reader(view, connected=False).statuses({"job_ids": [str(view.add())]}, ANYONE))


@pytest.mark.parametrize("body, message", [
    ([], "job_ids: required"), ({}, "job_ids: required"), ({"job_ids": "x"}, "job_ids: required"),
    ({"job_ids": []}, "job_ids: from 1 to 1000 ids, got 0"),
    ({"job_ids": [str(uuid4())] * 1001}, "job_ids: from 1 to 1000 ids, got 1001"),
    ({"job_ids": [str(uuid4()), "nope"]}, "job_ids[1]: must be a UUID"),
    ({"job_ids": [7]}, "job_ids[0]: must be a UUID"), ({"job_ids": ["a" * 5000]}, "job_ids[0]: must be a UUID"),
])
def test_a_bad_batch_is_a_400_naming_the_field(body: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_job_ids(body)
    assert str(refused.value).startswith(message)
    with pytest.raises(InvalidInput) as refused:
        asyncio.run(reader(FakeView()).statuses(body, ANYONE))
    assert str(refused.value).startswith(message)


# -- progress streams -----------------------------------------------------------------------
async def follow(view: FakeView, job_id: UUID, steps: list[tuple[str, int]], last_event_id: str | None = None,
                 caller: Caller = ANYONE) -> tuple[list[JobStatus], list[str]]:
    """Open a stream on the job, move it through `steps` (each once the stream has seen the
    previous status), and collect what the stream sent."""
    hub = ProgressHub(view, every_s=0.005, max_streams=10)
    poller = asyncio.create_task(hub.run())
    try:
        opened = await JobProgress(reader(view), view, hub).open(str(job_id), caller, last_event_id)
        assert isinstance(opened, Opened), opened
        seen: list[JobStatus] = []
        ids: list[str] = []
        pending = list(steps)
        if last_event_id is not None:  # resuming: the client has the status now; the job moves on
            view.move(job_id, *pending.pop(0))
        async with asyncio.timeout(5):
            async for event_id, status in opened.events:
                seen.append(status)
                ids.append(event_id)
                if pending:
                    view.move(job_id, *pending.pop(0))
        assert hub.open_streams == 0  # unsubscribed when the stream ended
        return seen, ids
    finally:
        poller.cancel()


def test_a_stream_sends_each_change_and_ends_with_the_final_status() -> None:
    view = FakeView()
    job = view.add()
    seen, ids = asyncio.run(follow(view, job, [("ongoing", 1), ("completed", 2)]))
    assert [(s.status, s.images.succeeded) for s in seen] == [("scheduled", 0), ("ongoing", 1),
                                                                      ("completed", 2)]
    assert ids == [progress_id(s) for s in seen] and len(set(ids)) == 3


def test_intermediate_statuses_are_spaced_by_the_gap_and_the_final_one_goes_at_once() -> None:
    """STATUS_STREAM_MIN_GAP_S: changes within the gap after an event are not sent one by one;
    the latest goes when the gap is over, and the final status does not wait for it."""
    gap = 0.4

    async def scenario() -> list[tuple[float, str, int]]:
        view = FakeView()
        job = view.add(total=4)
        hub = ProgressHub(view, every_s=0.005, max_streams=10)
        poller = asyncio.create_task(hub.run())
        sent: list[tuple[float, str, int]] = []
        loop = asyncio.get_running_loop()

        async def drive() -> None:
            for done in (1, 2, 3):  # three changes well within the gap after the first event
                await asyncio.sleep(0.05)
                view.move(job, "ongoing", done)
            while not any(status == "ongoing" for _, status, _ in sent):
                await asyncio.sleep(0.01)
            view.move(job, "completed", 4)  # right after an event: inside the next gap
        try:
            opened = await JobProgress(reader(view), view, hub, min_gap_s=gap).open(str(job), ANYONE, None)
            assert isinstance(opened, Opened)
            driver = asyncio.create_task(drive())
            async with asyncio.timeout(5):
                async for _, status in opened.events:
                    sent.append((loop.time(), status.status, status.images.succeeded))
            await driver
            return sent
        finally:
            poller.cancel()
    sent = asyncio.run(scenario())
    assert [(status, done) for _, status, done in sent] == [("scheduled", 0), ("ongoing", 3), ("completed", 4)]
    assert sent[1][0] - sent[0][0] >= gap - 0.01  # the ongoing ones waited out the gap; only the latest went
    assert sent[2][0] - sent[1][0] < gap / 2  # the final status did not


def test_heartbeats_come_while_nothing_changes_and_never_release_a_held_status_early() -> None:
    """STATUS_STREAM_HEARTBEAT_S: the stream yields HEARTBEAT every period; one that falls
    inside a gap wakes the stream without sending what the gap holds, and a final status that
    comes with a heartbeat is sent at once."""
    gap, beat = 0.5, 0.06

    async def scenario() -> list[tuple[float, str | None]]:
        view = FakeView()
        job = view.add(total=4)
        hub = ProgressHub(view, every_s=0.005, max_streams=10)
        poller = asyncio.create_task(hub.run())
        loop = asyncio.get_running_loop()
        sent: list[tuple[float, str | None]] = []
        try:
            opened = await JobProgress(reader(view), view, hub, min_gap_s=gap, heartbeat_s=beat).open(
                str(job), ANYONE, None)
            assert isinstance(opened, Opened)
            async with asyncio.timeout(5):
                async for item in opened.events:
                    sent.append((loop.time(), None if item is HEARTBEAT else item[1].status))
                    if len(sent) == 1:
                        view.move(job, "ongoing", 1)  # held: the gap has just begun
                    elif item is not HEARTBEAT and item[1].status == "ongoing":
                        view.move(job, "completed", 4)  # inside the next gap: goes at once
            return sent
        finally:
            poller.cancel()
    sent = asyncio.run(scenario())
    events = [(at, status) for at, status in sent if status is not None]
    assert [status for _, status in events] == ["scheduled", "ongoing", "completed"]
    beats_in_gap = [at for at, status in sent if status is None and at < events[1][0]]
    assert len(beats_in_gap) >= 4  # ~8 heartbeats in the 0.5 s gap, none of which sent the held status
    assert events[1][0] - events[0][0] >= gap - 0.01
    assert events[2][0] - events[1][0] < gap / 2
    assert asyncio.run(_no_heartbeat_without_the_setting())


async def _no_heartbeat_without_the_setting() -> bool:
    """A stream opened without a heartbeat yields its status, then nothing while nothing changes."""
    view = FakeView()
    job = view.add()
    hub = ProgressHub(view, every_s=0.005, max_streams=10)
    poller = asyncio.create_task(hub.run())
    try:
        opened = await JobProgress(reader(view), view, hub).open(str(job), ANYONE, None)
        assert isinstance(opened, Opened)
        first = await anext(opened.events)
        assert first is not HEARTBEAT
        try:
            async with asyncio.timeout(0.3):  # five heartbeat periods of the test above
                await anext(opened.events)
        except TimeoutError:
            return True
        return False
    finally:
        poller.cancel()


def test_a_watch_holds_intermediate_statuses_for_its_gap_and_never_the_final_one() -> None:
    """Watch.hold_until: during the gap an intermediate offer only replaces the latest; the gap's
    end wakes the stream once if anything came; a final offer wakes it at once; a final status
    offered while the previous event was being sent is not held at all."""
    view = FakeView()
    job = view.add(total=4)

    def offered(status: str, done: int) -> Offered:
        view.move(job, status, done)
        return Offered(view.rows[job])

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        watch = Watch(job)
        watch.offer(offered("ongoing", 1))
        watch.changed.clear()  # the stream took it
        watch.hold_until(loop.time() + 0.1)
        watch.offer(offered("ongoing", 2))
        watch.offer(offered("ongoing", 3))
        assert not watch.changed.is_set()
        async with asyncio.timeout(1):
            await watch.changed.wait()  # the gap ended with something held
        assert watch.latest is not None and watch.latest.status().images.succeeded == 3
        watch.changed.clear()
        watch.hold_until(loop.time() + 0.1)
        await asyncio.sleep(0.15)
        assert not watch.changed.is_set()  # nothing came during that gap: no wake-up
        watch.hold_until(loop.time() + 60)
        watch.offer(offered("completed", 4))
        assert watch.changed.is_set()  # the final one does not wait
        watch.end_gap()
        watch.changed.clear()
        watch.offer(offered("completed", 4))  # offered during the send of the previous event
        watch.hold_until(loop.time() + 60)
        assert watch.changed.is_set()
        watch.end_gap()
    asyncio.run(scenario())


def test_a_stream_closed_during_its_gap_ends_at_once_and_leaves_nothing_behind() -> None:
    """The server shutting down (`Opened.close`) while a stream waits out its gap with a change
    held: the stream ends now, not at the gap's end, sends nothing more, and unsubscribes."""
    async def scenario() -> tuple[list[str], float, int]:
        view = FakeView()
        job = view.add(total=4)
        hub = ProgressHub(view, every_s=0.005, max_streams=10)
        poller = asyncio.create_task(hub.run())
        loop = asyncio.get_running_loop()
        sent: list[str] = []
        try:
            opened = await JobProgress(reader(view), view, hub, min_gap_s=30).open(str(job), ANYONE, None)
            assert isinstance(opened, Opened)
            events = opened.events.__aiter__()
            sent.append((await anext(events))[1].status)  # the first event; a 30 s gap starts
            view.move(job, "ongoing", 1)  # held for the gap
            async with asyncio.timeout(5):
                while hub._seen.get(job, ("",))[0] != "ongoing":  # the hub has offered it
                    await asyncio.sleep(0.005)
            closing = loop.time()
            loop.call_later(0.05, opened.close)
            async with asyncio.timeout(5):
                sent += [status.status async for _, status in events]
            return sent, loop.time() - closing, hub.open_streams
        finally:
            poller.cancel()
    sent, took, still_open = asyncio.run(scenario())
    assert sent == ["scheduled"] and took < 1 and still_open == 0


def status_of(item: tuple[str, JobStatus] | None) -> str:
    assert item is not None  # no heartbeat set: every item is an event
    return item[1].status


def test_draining_ends_every_open_stream_and_refuses_new_ones_with_retry_shortly() -> None:
    async def scenario() -> tuple[list[list[str]], int]:
        view = FakeView()
        jobs = [view.add(), view.add()]
        hub = ProgressHub(view, every_s=0.005, max_streams=10)
        poller = asyncio.create_task(hub.run())
        progress = JobProgress(reader(view), view, hub)
        try:
            streams = [await progress.open(str(job), ANYONE, None) for job in jobs]
            assert all(isinstance(opened, Opened) for opened in streams)
            sent = [[status_of(await anext(opened.events))] for opened in streams]  # type: ignore[union-attr]
            hub.drain()
            with pytest.raises(RetryShortly, match="shutting down"):
                await progress.open(str(jobs[0]), ANYONE, None)
            async with asyncio.timeout(5):
                for opened, seen in zip(streams, sent, strict=True):
                    seen += [status_of(item) async for item in opened.events]  # type: ignore[union-attr]
            return sent, hub.open_streams
        finally:
            poller.cancel()
    sent, still_open = asyncio.run(scenario())
    assert sent == [["scheduled"], ["scheduled"]] and still_open == 0


def test_resuming_with_the_last_event_id_skips_what_the_client_has() -> None:
    view = FakeView()
    job = view.add()
    view.move(job, "ongoing", 1)
    first, ids = asyncio.run(follow(view, job, [("completed", 2)]))
    view.move(job, "ongoing", 1)  # as it was when the connection dropped
    resumed, _ = asyncio.run(follow(view, job, [("completed", 2)], last_event_id=ids[0]))
    assert [s.status for s in resumed] == ["completed"]


def test_a_client_that_has_the_final_status_is_told_204() -> None:
    view = FakeView()
    job = view.add()
    view.move(job, "completed", 2)
    hub = ProgressHub(view, every_s=0.01, max_streams=10)
    final = asyncio.run(reader(view).status(str(job), ANYONE))
    assert asyncio.run(JobProgress(reader(view), view, hub).open(str(job), ANYONE, progress_id(final))) is None


def test_another_tenants_job_is_404_and_a_full_hub_503() -> None:
    view = FakeView()
    job = view.add(owner="team-b")
    with pytest.raises(JobNotFound):
        asyncio.run(JobProgress(reader(view), view, ProgressHub(view, 0.01, 10)).open(str(job), TEAM_A, None))
    full = ProgressHub(view, 0.01, max_streams=0)
    with pytest.raises(RetryShortly, match=r"0 progress streams are open on this process \(STATUS_MAX_STREAMS\)"):
        asyncio.run(JobProgress(reader(view), view, full).open(str(view.add()), ANYONE, None))


def test_many_streams_cost_one_query_per_tick() -> None:
    async def run() -> int:
        view = FakeView()
        jobs = [view.add() for _ in range(200)]
        hub = ProgressHub(view, every_s=0.05, max_streams=1000)
        watches = [hub.subscribe(job) for job in jobs]
        before = view.queries
        await hub.tick()
        assert all(w.latest is not None for w in watches)
        for w in watches:
            hub.unsubscribe(w)
        return view.queries - before
    assert asyncio.run(run()) == 1


async def statuses_seen(view: FakeView, hub: ProgressHub, job: UUID,
                        when_scheduled: Callable[[], Awaitable[None]]) -> list[str]:
    """Follow the job's stream to its end with the hub running; `when_scheduled` runs once the
    stream has shown `scheduled` (it moves the job, and tells the hub or not)."""
    poller = asyncio.create_task(hub.run())
    try:
        opened = await JobProgress(reader(view), view, hub).open(str(job), ANYONE, None)
        assert isinstance(opened, Opened)
        seen = []
        async with asyncio.timeout(5):
            async for _, status in opened.events:
                seen.append(status.status)
                if status.status == "scheduled":
                    await when_scheduled()
        return seen
    finally:
        poller.cancel()


def test_a_fold_nudge_moves_a_stream_before_the_next_poll() -> None:
    view = FakeView()
    job = view.add()
    hub = ProgressHub(view, every_s=60, max_streams=10)  # the poll would come only after a minute

    async def folded() -> None:
        view.move(job, "completed", 2)
        hub.nudge({job, uuid4()})  # a job nobody watches is ignored
    assert asyncio.run(statuses_seen(view, hub, job, folded)) == ["scheduled", "completed"]


def test_while_this_fold_holds_every_partition_a_new_stream_is_read_at_once_and_the_poll_is_a_safety_net() -> None:
    async def run() -> list[str]:
        view = FakeView()
        job, other = view.add(), view.add()
        coverage = FoldCoverage(complete=True)
        hub = ProgressHub(view, every_s=0.01, max_streams=10, coverage=coverage)
        assert hub.poll_every_s == COVERED_POLL_S
        poller = asyncio.create_task(hub.run())
        try:
            hub.subscribe(other)  # the hub's first full read is spent on this one
            async with asyncio.timeout(5):
                while view.queries == 0:
                    await asyncio.sleep(0.001)
            opened = await JobProgress(reader(view), view, hub).open(str(job), ANYONE, None)
            assert isinstance(opened, Opened)
            view.move(job, "ongoing", 1)  # folded between the stream's first read and its subscription
            seen = []
            async with asyncio.timeout(1):  # well before the next full read (COVERED_POLL_S)
                async for _, status in opened.events:
                    seen.append(status.status)
                    if status.status == "ongoing":
                        view.move(job, "completed", 2)
                        hub.nudge({job})
            coverage.complete = False
            assert hub.poll_every_s == 0.01
            return seen
        finally:
            poller.cancel()
    assert asyncio.run(run()) == ["scheduled", "ongoing", "completed"]


def test_when_the_folds_partitions_move_every_watched_job_is_read_at_once() -> None:
    view = FakeView()
    job = view.add()
    hub = ProgressHub(view, every_s=60, max_streams=10, coverage=FoldCoverage(complete=True))

    async def moved() -> None:
        await asyncio.sleep(0.05)  # the newcomer's own read is done
        view.move(job, "completed", 2)  # another instance folded it: no nudge here
        hub.moved()
    assert asyncio.run(statuses_seen(view, hub, job, moved)) == ["scheduled", "completed"]
