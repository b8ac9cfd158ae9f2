"""The scheduler's use case for the jobs topic (services/scheduler/handlers/jobs.py): a batch's
submissions go to the durable schedule and the timer, its commands to the releaser, and a job
the schedule refused still ends. No Kafka, no database: the ports are in-memory fakes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from services.scheduler.handlers.dispatch import Dispatcher
from services.scheduler.handlers.jobs import TakeJobs
from services.scheduler.handlers.release import Releaser
from services.scheduler.settings import SchedulerSettings
from shared.consumer import Batch, Delivery
from shared.events import EventUnion, ImageFailed, JobCancelled, JobCancelRequested, JobSubmitted, Visit, encode_event
from tests.handlers.fakes_scheduler import FakeLedger, FakePublisher, FakeTable, FakeTaskSender


def batch(*events: tuple[int, EventUnion]) -> Batch:
    """The events as the consumer loop hands them over, (partition, event) each."""
    return Batch([Delivery(TopicPartition("imagejobs.jobs", p), n, 0, e,
                           ConsumerRecord("imagejobs.jobs", p, n, 0, 0, None, encode_event(e), None, 0, 0, ()))
                  for n, (p, e) in enumerate(events)])


def take_jobs(owned: set[int]) -> tuple[TakeJobs, FakeTable, FakePublisher, FakeLedger]:
    settings, table, publisher, ledger = SchedulerSettings(), FakeTable(), FakePublisher(), FakeLedger()
    dispatcher = Dispatcher(settings, table, FakeTaskSender(), lambda: 1.0)
    releaser = Releaser(settings, table, publisher, ledger, dispatcher)
    return TakeJobs(table, publisher, releaser, lambda: owned), table, publisher, ledger


def test_a_batch_stores_its_jobs_holds_those_owned_and_then_decides_its_commands() -> None:
    use_case, table, _, ledger = take_jobs(owned={0})
    later = datetime.now(UTC) + timedelta(hours=1)
    mine, foreign = (JobSubmitted(job_id=uuid4(), scheduled_time=later,
                                  visits=(Visit(store_id="S1", image_urls=("http://x/1",)),)) for _ in range(2))
    ledger.states[mine.job_id] = "pending"
    cancel = JobCancelRequested(job_id=mine.job_id, command_id=uuid4())
    asyncio.run(use_case.on_batch(batch((0, mine), (3, foreign), (0, cancel))))
    assert set(table.events) == {mine.job_id, foreign.job_id}  # both stored; only the owned one held
    assert not use_case.releaser.holds(foreign.job_id)
    assert not use_case.releaser.holds(mine.job_id)  # cancelled in the same batch, after it was held
    assert [type(e) for e in ledger.published] == [JobCancelled]


def test_a_refused_job_fails_image_by_image() -> None:
    use_case, _, publisher, _ = take_jobs(owned={0})
    job = JobSubmitted(job_id=uuid4(), scheduled_time=datetime.now(UTC),
                       visits=(Visit(store_id="S1", image_urls=("http://x/1", "http://x/2")),))
    asyncio.run(use_case.refused(job, "too big"))
    assert [type(e) for e in publisher.results] == [ImageFailed, ImageFailed]
    assert all(isinstance(e, ImageFailed) and "too big" in e.reason for e in publisher.results)
