"""Reading jobs (services/status/handlers/jobs.py) and a job's webhook (handlers/webhooks.py)
in-process, on the fake view of tests/handlers/fakes_status.py: the answers are the API's
models, the refusals the domain's errors (app.py maps both to HTTP)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from services.status.domain import Caller, JobNotFound, RetryShortly, WebhookView
from services.status.handlers.jobs import JobReader
from services.status.handlers.webhooks import NO_CALLBACK, WebhookReader
from shared.api import Images, JobStatus, StoreError, WebhookAttempt
from shared.schedule_time import InvalidInput
from tests.handlers.fakes_status import AT, FakeView, FakeWebhooks, reader

ANYONE = Caller(None, keys_on=False)
TEAM_A = Caller("team-a", keys_on=True, legacy=frozenset({"key-hash-1"}))


def test_a_status_is_the_api_model_with_errors_only_when_failed() -> None:
    view = FakeView()
    done, failed = view.add(), view.add()
    view.move(done, "completed", 2)
    view.move(failed, "failed", 1, 1)
    view.errors[failed] = [("S2", 1, 0, "HTTP 404"), ("S1", 0, 1, "HTTP 500"), ("S1", 0, 0, "first")]
    assert asyncio.run(reader(view).status(str(done), ANYONE)) == JobStatus(
        job_id=str(done), status="completed", scheduled_time="2026-12-06T09:00:00Z", priority=3,
        images=Images(total=2, succeeded=2, failed=0, pending=0, started=2))
    answer = asyncio.run(reader(view).status(str(failed), ANYONE))
    assert answer.error == [StoreError(store_id="S1", error="first"), StoreError(store_id="S2", error="HTTP 404")]


def test_a_status_is_one_view_query_even_for_a_failed_job() -> None:
    view = FakeView()
    failed = view.add()
    view.move(failed, "failed", 1, 1)
    view.errors[failed] = [("S1", 0, 1, "HTTP 500")]
    before = view.queries
    answer = asyncio.run(reader(view).status(str(failed), ANYONE))
    assert answer.error == [StoreError(store_id="S1", error="HTTP 500")]
    assert view.queries - before == 1  # the row and its failures together


@pytest.mark.parametrize("raw_id, message", [(None, "jobid: required"), ("", "jobid: required"),
                                             ("nope", "job_id: must be a UUID")])
def test_a_malformed_id_is_refused_naming_the_field(raw_id: str | None, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        asyncio.run(reader(FakeView()).status(raw_id, ANYONE))


def test_an_unknown_or_foreign_job_is_not_found_and_a_legacy_owner_is_the_tenants() -> None:
    view = FakeView()
    theirs, legacy = view.add(owner="team-b"), view.add(owner="key-hash-1")
    for job_id in (uuid4(), theirs):
        with pytest.raises(JobNotFound, match="job not found"):
            asyncio.run(reader(view).status(str(job_id), TEAM_A))
    assert asyncio.run(reader(view).status(str(legacy), TEAM_A)).job_id == str(legacy)


def test_a_job_not_folded_yet_waits_then_says_retry_when_not_connected() -> None:
    view = FakeView()
    view.folded_up_to = 3  # behind the partition's end: an unknown id waits the whole wait_s
    started = asyncio.run(_timed(reader(view, wait_s=0.1), uuid4()))
    assert started >= 0.1
    with pytest.raises(RetryShortly, match="not connected yet"):
        asyncio.run(reader(view, connected=False).status(str(view.add()), ANYONE))


async def _timed(jobs: JobReader, job_id: UUID) -> float:
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(JobNotFound):
        await jobs.status(str(job_id), ANYONE)
    return loop.time() - began


def test_the_listing_pages_newest_first_with_a_cursor_and_refuses_a_bad_one() -> None:
    view = FakeView()
    ids = [view.add(owner="team-a") for _ in range(5)]
    view.add(owner="team-b")
    for n, job_id in enumerate(ids):
        view.submitted_at[job_id] = AT + timedelta(minutes=n)
    first = asyncio.run(reader(view).jobs(TEAM_A, None, 3, None))
    assert [job.job_id for job in first.jobs] == [str(j) for j in reversed(ids[2:])]
    assert first.jobs[0].submitted_at == "2026-12-06T09:04:00Z" and first.next_cursor is not None
    rest = asyncio.run(reader(view).jobs(TEAM_A, None, 3, first.next_cursor))
    assert [job.job_id for job in rest.jobs] == [str(ids[1]), str(ids[0])] and rest.next_cursor is None
    with pytest.raises(InvalidInput, match="cursor: not a cursor this API gave out"):
        asyncio.run(reader(view).jobs(TEAM_A, None, 3, "bm9wZQ"))
    with pytest.raises(InvalidInput, match="status: must be one of scheduled, ongoing"):
        asyncio.run(reader(view).jobs(TEAM_A, "done", 3, None))


def test_results_are_paged_from_the_view() -> None:
    view = FakeView()
    job = view.add()
    view.results[job] = [{"task_id": f"t{i}", "store_id": "S1", "image_url": "http://x/i.jpg", "status": "succeeded",
                          "width": 2, "height": 3, "perimeter": 10, "error": None} for i in range(5)]
    page = asyncio.run(reader(view).results(str(job), ANYONE, 2, 1))
    assert (page.job_id, page.limit, page.offset) == (str(job), 2, 1)
    assert [r.task_id for r in page.results] == ["t1", "t2"] and page.results[0].error is None


def test_a_jobs_webhook_is_shown_to_its_owner_and_a_job_without_one_is_not_found() -> None:
    view = FakeView()
    with_hook, without = view.add(owner="team-a"), view.add(owner="team-a")
    sent = datetime(2026, 12, 6, 9, 1, 2, tzinfo=UTC)
    hooks = FakeWebhooks({with_hook: WebhookView("https://r/x", f"msg_{with_hook}", "delivered", [
        {"attempt": 1, "at": sent, "status_code": 204, "error": None, "duration_ms": 7}], None, sent)})
    shown = asyncio.run(WebhookReader(reader(view), hooks).webhook(str(with_hook), TEAM_A))
    assert shown.attempts == [WebhookAttempt(attempt=1, at="2026-12-06T09:01:02Z", status_code=204, error=None,
                                             duration_ms=7)]
    assert (shown.state, shown.delivered_at, shown.next_attempt_at) == ("delivered", "2026-12-06T09:01:02Z", None)
    with pytest.raises(JobNotFound, match=re.escape(NO_CALLBACK)):
        asyncio.run(WebhookReader(reader(view), hooks).webhook(str(without), TEAM_A))
    with pytest.raises(JobNotFound, match="job not found"):
        asyncio.run(WebhookReader(reader(view), hooks).webhook(str(with_hook), Caller("team-b", keys_on=True)))
