"""The webhook outbox in the status fold (services/status/adapters/view.py::refresh_status), on a
scratch database: a job with a callback_url gets exactly one delivery, made by the fold that
makes it final, whatever the order, batching or repeats of its events, and a replay of the
topics (a dropped view) makes no second one; jobs without a callback_url, jobs not final and
withdrawn jobs get none."""

from __future__ import annotations

import random
from typing import Any
from uuid import UUID

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.events import JobCancelled, JobSubmitted, JobWithdrawn
from tests.support.fold import ScratchView
from tests.support.jobs import JobEvents

HOOK = "https://hooks.example.com/imagejobs"


def hooked(job: JobEvents) -> JobSubmitted:
    return job.submitted().model_copy(update={"callback_url": HOOK})


def deliveries(scratch: ScratchView, job_id: UUID) -> list[tuple[Any, ...]]:
    with psycopg.connect(scratch.url) as conn:
        return conn.execute("SELECT webhook_id, url, state, attempts, created_at FROM webhook_deliveries"
                            " WHERE job_id = %s", (job_id,)).fetchall()


def test_the_fold_that_makes_a_job_final_makes_its_one_delivery(scratch: ScratchView) -> None:
    job = JobEvents.new(("S1", 2))
    scratch.fold([hooked(job), job.released(), job.ok("S1", 0, 0)])
    assert deliveries(scratch, job.job_id) == []  # ongoing: nothing to send yet
    scratch.fold([job.bad("S1", 0, 1)])
    [(webhook_id, url, state, attempts, made)] = deliveries(scratch, job.job_id)
    assert (webhook_id, url, state, attempts) == (f"msg_{job.job_id}", HOOK, "pending", 0)
    scratch.fold([hooked(job), job.ok("S1", 0, 0), job.bad("S1", 0, 1)])  # redelivered events
    assert deliveries(scratch, job.job_id)[0][4] == made


def test_no_callback_url_no_delivery_and_a_cancelled_job_gets_one(scratch: ScratchView) -> None:
    plain, cancelled = JobEvents.new(("S1", 1)), JobEvents.new(("S1", 1))
    scratch.fold([plain.submitted(), plain.released(), plain.ok("S1", 0, 0)])
    scratch.fold([hooked(cancelled), JobCancelled(job_id=cancelled.job_id)])
    assert deliveries(scratch, plain.job_id) == []
    assert [row[2] for row in deliveries(scratch, cancelled.job_id)] == ["pending"]


def test_a_withdrawn_job_gets_none(scratch: ScratchView) -> None:
    job = JobEvents.new(("S1", 1))
    scratch.fold([hooked(job), JobWithdrawn(job_id=job.job_id)])
    assert deliveries(scratch, job.job_id) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.randoms(use_true_random=False), st.integers(1, 6), st.booleans())
def test_any_order_batching_and_repeats_make_exactly_one_delivery(scratch: ScratchView, rng: random.Random,
                                                                  batch_size: int, replay: bool) -> None:
    job = JobEvents.new(("S1", 2), ("S2", 1))
    events: list[Any] = [hooked(job), job.released(), job.ok("S1", 0, 0), job.bad("S1", 0, 1), job.ok("S2", 1, 0)]
    events += rng.sample(events, 2)
    rng.shuffle(events)
    scratch.fold(events, batch_size)
    if replay:  # the view dropped and rebuilt from the topics: the outbox row is already there
        with psycopg.connect(scratch.url) as conn:
            conn.execute("DELETE FROM status_jobs WHERE job_id = %s", (job.job_id,))
            conn.execute("DELETE FROM status_outcomes WHERE job_id = %s", (job.job_id,))
        scratch.fold(events, batch_size)
    assert [row[:4] for row in deliveries(scratch, job.job_id)] == [(f"msg_{job.job_id}", HOOK, "pending", 0)]


def test_attempts_finishing_together_are_recorded_in_one_transaction_each_as_it_went(scratch: ScratchView) -> None:
    """WebhookStore.record groups the attempts that finish while one is being recorded: each
    caller gets its own answer, an attempt on a row another instance took over is not recorded,
    and every recorded attempt is in the job's history."""
    import asyncio
    from dataclasses import replace
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace

    from psycopg_pool import AsyncConnectionPool

    from services.status.adapters.webhooks import WebhookStore
    from services.status.domain import DELIVERED, PENDING, Decision, Sent

    jobs = [JobEvents.new(("S1", 1)) for _ in range(4)]
    for job in jobs:
        scratch.fold([hooked(job), job.released(), job.ok("S1", 0, 0)])

    async def scenario() -> tuple[list[Any], list[Any]]:
        async with AsyncConnectionPool(scratch.url, min_size=1, max_size=2, open=False) as pool:
            store = WebhookStore(SimpleNamespace(pool=pool))
            claimed = {due.job_id: due for due in await store.claim(10_000, 30.0)}  # other tests' rows too
            dues = [claimed[job.job_id] for job in jobs]
            taken_over = replace(dues[2], attempts=5)  # as if another instance had recorded meanwhile
            now = datetime.now(UTC)
            answers = await asyncio.gather(
                store.record(dues[0], now, Sent(204, None, 3), Decision(DELIVERED)),
                store.record(dues[1], now, Sent(500, "HTTP 500 \x00 from the receiver", 4),
                             Decision(PENDING, now + timedelta(seconds=5))),
                store.record(taken_over, now, Sent(204, None, 2), Decision(DELIVERED)),
                # one job twice in a batch (its lease ran out and it was claimed again): the first counts
                store.record(dues[3], now, Sent(204, None, 2), Decision(DELIVERED)),
                store.record(dues[3], now, Sent(500, "HTTP 500", 2), Decision(PENDING, now + timedelta(seconds=5))))
        with psycopg.connect(scratch.url) as conn:
            rows = conn.execute("SELECT d.job_id, d.state, d.attempts, count(a.*) FROM webhook_deliveries d"
                                " LEFT JOIN webhook_attempts a USING (job_id) WHERE d.job_id = ANY(%s)"
                                " GROUP BY 1, 2, 3", ([job.job_id for job in jobs],)).fetchall()
        return list(answers), rows

    answers, rows = asyncio.run(scenario())
    assert answers[0] is not None and answers[0].delay_s is not None and answers[0].delay_s >= 0
    assert answers[1] is not None and answers[1].delay_s is None  # recorded, not delivered
    assert answers[2] is None  # the row was no longer as this attempt claimed it
    assert answers[3] is not None and answers[3].delay_s is not None and answers[4] is None
    by_job = {job_id: (state, attempts, history) for job_id, state, attempts, history in rows}
    assert by_job[jobs[0].job_id] == ("delivered", 1, 1)
    assert by_job[jobs[1].job_id] == ("pending", 1, 1)
    assert by_job[jobs[2].job_id] == ("pending", 0, 0)
    assert by_job[jobs[3].job_id] == ("delivered", 1, 1)
