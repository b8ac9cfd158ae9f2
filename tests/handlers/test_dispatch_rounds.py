"""When the dispatcher (services/scheduler/handlers/dispatch.py) starts a round: a backlog
refills a full window in rounds of an eighth of it, but a tenant with work and nothing out
gets a round at the first free place. No Kafka, no database (rounds are not run here)."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from services.scheduler.handlers.dispatch import Dispatcher
from services.scheduler.settings import SchedulerSettings
from shared.events import JobSubmitted, Visit

WINDOW = 16


def job(owner: str, images: int) -> JobSubmitted:
    urls = tuple(f"http://x/{i}" for i in range(images))
    return JobSubmitted(job_id=uuid4(), scheduled_time=datetime.now(UTC), owner=owner,
                        visits=(Visit(store_id="S1", image_urls=urls),))


def dispatcher_with_window_full_of(owner: str, out: int) -> Dispatcher:
    dispatcher = Dispatcher(SchedulerSettings(dispatch_window=WINDOW), None, lambda: 1.0)  # type: ignore[arg-type]
    dispatcher.add(job(owner, 500), partition=0)
    for n in range(out):
        dispatcher.out.dispatched(f"{owner}-task-{n}", owner, now=0.0)
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
    dispatcher.out.dispatched("team-b-task", "team-b", now=1.0)  # once it has one out, it waits as others do
    dispatcher.out.free(["team-a-task-1"])
    assert not dispatcher.worth_a_round(dispatcher.room())
