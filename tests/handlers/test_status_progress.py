"""Batch status and progress streams (services/status/handlers/{jobs,progress}.py) in-process:
a fake view whose rows the test moves, no Kafka, no database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

from services.status.adapters.view import JobRow
from services.status.domain import MAX_BATCH_IDS, parse_job_ids, progress_id
from services.status.handlers.jobs import Caller, JobReader
from services.status.handlers.progress import JobProgress, Opened, ProgressHub
from shared.schedule_time import InvalidInput

AT = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
ANYONE = Caller(None, keys_on=False)
TEAM_A = Caller("team-a", keys_on=True)


class FakeView:
    def __init__(self) -> None:
        self.rows: dict[UUID, JobRow] = {}
        self.errors: dict[UUID, list[Any]] = {}
        self.queries = 0
        self.folded = 10

    def add(self, status: str = "scheduled", owner: str | None = None, total: int = 2) -> UUID:
        job_id = uuid4()
        self.rows[job_id] = JobRow(job_id, status, AT, total, 0, 0, owner)
        return job_id

    def move(self, job_id: UUID, status: str, succeeded: int, failed: int = 0) -> None:
        row = self.rows[job_id]
        self.rows[job_id] = JobRow(job_id, status, row.scheduled_time, row.total, succeeded, failed, row.owner,
                                   dispatched=row.total)

    async def load_job(self, job_id: UUID) -> JobRow | None:
        return self.rows.get(job_id)

    async def load_jobs(self, job_ids: list[UUID]) -> list[tuple[JobRow, list[Any] | None]]:
        self.queries += 1
        return [(self.rows[j], self.errors.get(j)) for j in job_ids if j in self.rows]

    async def folded_offsets(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return {tp: self.folded for tp in partitions}


def reader(view: FakeView) -> JobReader:
    async def ends(job_ids: list[UUID]) -> dict[UUID, tuple[str, int, int]]:
        return {job_id: ("jobs", 0, 10) for job_id in job_ids}
    return JobReader(view, ends, lambda: True, wait_s=0.3)  # type: ignore[arg-type]


# -- batch status ---------------------------------------------------------------------------
def test_batch_answers_in_the_order_asked_and_lists_unknown_and_foreign_ids_as_not_found() -> None:
    view = FakeView()
    mine, theirs, failed = view.add(owner="team-a"), view.add(owner="team-b"), view.add("failed", "team-a")
    view.errors[failed] = [["S2", 1, 0, "b"], ["S1", 0, 1, "a"]]
    unknown = str(uuid4())
    asked = [str(failed), unknown, str(mine), str(theirs), str(mine).upper()]
    reply = asyncio.run(reader(view).statuses({"job_ids": asked}, TEAM_A))
    assert reply.status == 200
    assert [job["job_id"] for job in reply.body["jobs"]] == [str(failed), str(mine)]
    assert reply.body["jobs"][0]["error"] == [{"store_id": "S1", "error": "a"}, {"store_id": "S2", "error": "b"}]
    assert "error" not in reply.body["jobs"][1]
    assert reply.body["not_found"] == [unknown, str(theirs)]
    assert view.queries == 2  # the batch, then once more after waiting for the fold of the missing


def test_batch_of_known_jobs_is_one_query() -> None:
    view = FakeView()
    ids = [str(view.add()) for _ in range(MAX_BATCH_IDS)]
    reply = asyncio.run(reader(view).statuses({"job_ids": ids}, ANYONE))
    assert len(reply.body["jobs"]) == MAX_BATCH_IDS and view.queries == 1


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
    reply = asyncio.run(reader(FakeView()).statuses(body, ANYONE))
    assert reply.status == 400 and reply.body["error"].startswith(message)


# -- progress streams -----------------------------------------------------------------------
async def follow(view: FakeView, job_id: UUID, steps: list[tuple[str, int]], last_event_id: str | None = None,
                 caller: Caller = ANYONE) -> tuple[list[dict[str, Any]], list[str]]:
    """Open a stream on the job, move it through `steps` (each once the stream has seen the
    previous status), and collect what the stream sent."""
    hub = ProgressHub(view, every_s=0.005, max_streams=10)
    poller = asyncio.create_task(hub.run())
    try:
        opened = await JobProgress(reader(view), view, hub).open(str(job_id), caller, last_event_id)
        assert isinstance(opened, Opened), opened
        seen: list[dict[str, Any]] = []
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
    assert [(s["status"], s["images"]["succeeded"]) for s in seen] == [("scheduled", 0), ("ongoing", 1),
                                                                      ("completed", 2)]
    assert ids == [progress_id(s) for s in seen] and len(set(ids)) == 3


def test_resuming_with_the_last_event_id_skips_what_the_client_has() -> None:
    view = FakeView()
    job = view.add()
    view.move(job, "ongoing", 1)
    first, ids = asyncio.run(follow(view, job, [("completed", 2)]))
    view.move(job, "ongoing", 1)  # as it was when the connection dropped
    resumed, _ = asyncio.run(follow(view, job, [("completed", 2)], last_event_id=ids[0]))
    assert [s["status"] for s in resumed] == ["completed"]


def test_a_client_that_has_the_final_status_is_told_204() -> None:
    view = FakeView()
    job = view.add()
    view.move(job, "completed", 2)
    hub = ProgressHub(view, every_s=0.01, max_streams=10)
    final = asyncio.run(reader(view).status(str(job), ANYONE)).body
    reply = asyncio.run(JobProgress(reader(view), view, hub).open(str(job), ANYONE, progress_id(final)))
    assert not isinstance(reply, Opened) and reply.status == 204


def test_another_tenants_job_is_404_and_a_full_hub_503() -> None:
    view = FakeView()
    job = view.add(owner="team-b")
    reply = asyncio.run(JobProgress(reader(view), view, ProgressHub(view, 0.01, 10)).open(str(job), TEAM_A, None))
    assert not isinstance(reply, Opened) and reply.status == 404
    full = ProgressHub(view, 0.01, max_streams=0)
    reply = asyncio.run(JobProgress(reader(view), view, full).open(str(view.add()), ANYONE, None))
    assert not isinstance(reply, Opened) and reply.status == 503 and "Retry-After" in (reply.headers or {})


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


def test_a_fold_nudge_moves_a_stream_before_the_next_poll() -> None:
    async def run() -> list[str]:
        view = FakeView()
        job = view.add()
        hub = ProgressHub(view, every_s=60, max_streams=10)  # the poll would come only after a minute
        poller = asyncio.create_task(hub.run())
        try:
            opened = await JobProgress(reader(view), view, hub).open(str(job), ANYONE, None)
            assert isinstance(opened, Opened)
            seen = []
            async with asyncio.timeout(5):
                async for _, status in opened.events:
                    seen.append(status["status"])
                    if status["status"] == "scheduled":
                        view.move(job, "completed", 2)
                        hub.nudge({job, uuid4()})  # a job nobody watches is ignored
            return seen
        finally:
            poller.cancel()
    assert asyncio.run(run()) == ["scheduled", "completed"]
