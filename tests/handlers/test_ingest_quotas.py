"""Tenant quotas in the submit use case (services/ingest/handlers.py: TenantQuotas), in-process
with in-memory fakes of the ports: a refusal publishes nothing, parallel submits of one tenant
never overshoot, a failed publish gives its reservation back, other tenants are unaffected."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from uuid import UUID
from zoneinfo import ZoneInfo

from prometheus_client import REGISTRY

from services.ingest.domain import NotAccepted, OverQuota
from services.ingest.handlers import SubmitJob, TenantQuotas
from shared.api import Accepted, Limits
from tests.handlers.fakes_ingest import FakeAdmissions, FakeKeys, FakePublisher, FakeView
from tests.handlers.test_ingest_submit import NOW
from tests.support.waiting import until

TEN = json.dumps({"count": 1, "visits": [{"store_id": "S1", "visit_time": "10:00",
                                          "image_url": [f"http://img.test/{i}.jpg" for i in range(10)]}]}).encode()
Answer = Accepted | OverQuota | NotAccepted


class Submits:
    """One ingest process's submit use case over shared quotas; answers instead of raising."""

    def __init__(self, publisher: FakePublisher, quotas: TenantQuotas) -> None:
        self.publisher, self.quotas = publisher, quotas
        self.use_case = SubmitJob(FakeKeys(), publisher, FakeAdmissions(), ZoneInfo("Asia/Kolkata"), Limits(),
                                  clock=lambda: NOW, quotas=quotas)

    async def __call__(self, tenant: str | None, key: str | None = None) -> Answer:
        try:
            return await self.use_case(TEN, tenant, key)
        except (OverQuota, NotAccepted) as refused:
            return refused


def submits(publisher: FakePublisher, view: FakeView, max_pending: int = 100, rate: float = 0,
            clock: Callable[[], float] | None = None) -> Submits:
    quotas = TenantQuotas(view, max_pending, rate, clock=clock) if clock else TenantQuotas(view, max_pending, rate)
    return Submits(publisher, quotas)


def kinds(answers: list[Answer]) -> list[str]:
    return [type(answer).__name__ for answer in answers]


def rejected(tenant: str, quota: str) -> float:
    return REGISTRY.get_sample_value("imagejobs_ingest_rejected_total", {"tenant": tenant, "quota": quota}) or 0.0


async def test_twenty_parallel_submits_of_one_tenant_accept_exactly_up_to_the_limit() -> None:
    publisher, view = FakePublisher(), FakeView()
    submit = submits(publisher, view)
    before = rejected("quota-a", "pending")
    answers = await asyncio.gather(*(submit("quota-a") for _ in range(20)))
    assert sorted(kinds(answers)) == ["Accepted"] * 10 + ["OverQuota"] * 10
    refused = next(a for a in answers if isinstance(a, OverQuota))
    assert refused.refusal.retry_after_s == 5 and "limit is 100" in str(refused)
    assert len(publisher.sent) == 10 and view.reads <= 2  # one read served every waiting submit
    assert rejected("quota-a", "pending") == before + 10
    assert isinstance(await submit("quota-b"), Accepted)  # another tenant is unaffected


async def test_jobs_finishing_in_the_view_make_room_again() -> None:
    publisher, view = FakePublisher(), FakeView()
    submit = submits(publisher, view, max_pending=20)
    assert kinds([await submit("t") for _ in range(3)]) == ["Accepted", "Accepted", "OverQuota"]
    view.folded = {UUID(job_id) for job_id, _ in publisher.sent}  # folded, and already final: sum 0
    await asyncio.sleep(0.25)  # past the read interval
    assert isinstance(await submit("t"), Accepted)


async def test_a_failed_publish_gives_its_reservation_back() -> None:
    view = FakeView()
    failing = submits(FakePublisher(fails="queue"), view, max_pending=10)
    assert isinstance(await failing("t"), NotAccepted)
    working = Submits(FakePublisher(), failing.quotas)  # the same process's quotas
    assert isinstance(await working("t"), Accepted)  # 10 more fit the limit of 10: nothing was kept


async def test_when_the_view_cannot_be_read_a_job_that_may_not_fit_is_not_accepted_not_over_quota() -> None:
    publisher, view = FakePublisher(), FakeView(fails=True)
    submit = submits(publisher, view, max_pending=15)
    unknown = await submit("t")  # never read (e.g. just started): cannot tell
    assert isinstance(unknown, NotAccepted) and "pending images" in str(unknown) and not publisher.sent
    view.fails = False
    await asyncio.sleep(0.25)
    assert isinstance(await submit("t"), Accepted)  # read once: 0 pending
    view.fails = True
    await asyncio.sleep(0.25)
    unsure = await submit("t")  # 10 + 10 > 15 by this process's count, and no read
    assert isinstance(unsure, NotAccepted) and len(publisher.sent) == 1


async def test_the_rate_quota_refuses_with_when_to_retry() -> None:
    now = [0.0]
    publisher = FakePublisher()
    submit = submits(publisher, FakeView(), max_pending=0, rate=20, clock=lambda: now[0])
    answers = [await submit("fast") for _ in range(3)]
    assert kinds(answers) == ["Accepted"] * 3  # 20 in the bucket, then one job into debt
    refused = await submit("fast")
    assert isinstance(refused, OverQuota) and refused.refusal.retry_after_s == 1
    assert "20 images/s" in str(refused) and len(publisher.sent) == 3
    assert isinstance(await submit("slow"), Accepted)
    now[0] = 1.0
    assert isinstance(await submit("fast"), Accepted)


async def test_an_idempotency_key_retry_is_counted_once() -> None:
    publisher, view = FakePublisher(), FakeView()
    submit = submits(publisher, view, max_pending=20)
    first, again = await submit("t", "key-1"), await submit("t", "key-1")
    assert isinstance(first, Accepted) and isinstance(again, Accepted) and first.job_id == again.job_id
    assert isinstance(await submit("t"), Accepted)  # 10 + 10 fit the limit of 20: the retry took nothing
    assert isinstance(await submit("t"), OverQuota)


async def test_jobs_other_ingest_processes_accepted_are_seen_within_one_read_interval() -> None:
    publisher, view = FakePublisher(), FakeView()
    submit = submits(publisher, view, max_pending=100)
    assert isinstance(await submit("t"), Accepted)  # starts the first read beside it
    await asyncio.sleep(0.25)
    view.counted["t"] = 85  # another ingest accepted 85 images meanwhile
    assert isinstance(await submit("t"), Accepted)  # fits by this process's count; the read is due
    await until(lambda: view.landed == view.reads == 2)  # that read has landed: 85 + the 20 not yet folded here
    for _ in range(3):  # and its caller has taken the answer in
        await asyncio.sleep(0)
    refused = await submit("t")
    assert isinstance(refused, OverQuota) and "105 pending" in str(refused)


async def test_without_authentication_every_job_counts_for_the_one_tenant() -> None:
    publisher, view = FakePublisher(), FakeView()
    view.counted = {"alpha": 50, "beta": 45}  # recorded while keys were on
    submit = submits(publisher, view, max_pending=100)
    assert isinstance(await submit(None), OverQuota)  # 95 + 10: waits for the first read
    assert len(publisher.sent) == 0
