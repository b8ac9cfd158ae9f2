"""Tenant quotas in the submit use case (services/ingest/handlers.py: TenantQuotas), in-process
with fakes: a 429 publishes nothing, parallel submits of one tenant never overshoot, a failed
publish gives its reservation back, other tenants are unaffected."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection
from uuid import UUID
from zoneinfo import ZoneInfo

from prometheus_client import REGISTRY

from services.ingest.domain import Limits
from services.ingest.handlers import SubmitJob, TenantQuotas
from shared.http import Reply
from tests.handlers.test_ingest_submit import NOW, FakeAdmissions, FakeKeys, FakePublisher

TEN = json.dumps({"count": 1, "visits": [{"store_id": "S1", "visit_time": "10:00",
                                          "image_url": [f"http://img.test/{i}.jpg" for i in range(10)]}]}).encode()


class FakeView:
    """The status view's pending sums; a read takes a moment (other submits run meanwhile)."""

    def __init__(self, published: FakePublisher | None = None, fails: bool = False) -> None:
        self.counted: dict[str, int] = {}
        self.folded: set[UUID] = set()
        self.reads = 0
        self.published, self.fails = published, fails

    async def pending(self, owners: Collection[str] | None, recent: list[UUID]) -> tuple[int, set[UUID]]:
        self.reads += 1
        await asyncio.sleep(0.05)
        if self.fails:
            raise OSError("database down")
        counted = sum(n for owner, n in self.counted.items() if owners is None or owner in owners)
        return counted, self.folded & set(recent)


def use_case(publisher: FakePublisher, view: FakeView, max_pending: int = 100, rate: float = 0,
             clock: object = None) -> SubmitJob:
    quotas = TenantQuotas(view, max_pending, rate, **({"clock": clock} if clock else {}))  # type: ignore[arg-type]
    return SubmitJob(FakeKeys(), publisher, FakeAdmissions(), ZoneInfo("Asia/Kolkata"), Limits(),
                     clock=lambda: NOW, quotas=quotas)


def rejected(tenant: str, quota: str) -> float:
    return REGISTRY.get_sample_value("imagejobs_ingest_rejected_total", {"tenant": tenant, "quota": quota}) or 0.0


async def test_twenty_parallel_submits_of_one_tenant_accept_exactly_up_to_the_limit() -> None:
    publisher, view = FakePublisher(), FakeView()
    submit = use_case(publisher, view)
    before = rejected("quota-a", "pending")
    replies: list[Reply] = await asyncio.gather(*(submit(TEN, "quota-a", None) for _ in range(20)))
    assert sorted(r.status for r in replies) == [200] * 10 + [429] * 10
    refused = next(r for r in replies if r.status == 429)
    assert refused.headers == {"Retry-After": "5"} and "limit is 100" in refused.body["error"]
    assert len(publisher.sent) == 10 and view.reads <= 2  # one read served every waiting submit
    assert rejected("quota-a", "pending") == before + 10
    other = await submit(TEN, "quota-b", None)
    assert other.status == 200  # another tenant is unaffected


async def test_jobs_finishing_in_the_view_make_room_again() -> None:
    publisher, view = FakePublisher(), FakeView()
    submit = use_case(publisher, view, max_pending=20)
    assert [(await submit(TEN, "t", None)).status for _ in range(3)] == [200, 200, 429]
    view.folded = {UUID(job_id) for job_id, _ in publisher.sent}  # folded, and already final: sum 0
    await asyncio.sleep(0.25)  # past the read interval
    assert (await submit(TEN, "t", None)).status == 200


async def test_a_failed_publish_gives_its_reservation_back() -> None:
    view = FakeView()
    failing = use_case(FakePublisher(fails="queue"), view, max_pending=10)
    assert (await failing(TEN, "t", None)).status == 503
    quotas: TenantQuotas = failing.quotas  # type: ignore[assignment]
    assert quotas._quota("t").pending.estimate() == 0  # type: ignore[union-attr]  # noqa: SLF001


async def test_when_the_view_cannot_be_read_a_job_that_may_not_fit_is_a_503_not_a_429() -> None:
    publisher, view = FakePublisher(), FakeView(fails=True)
    submit = use_case(publisher, view, max_pending=15)
    unknown = await submit(TEN, "t", None)  # never read (e.g. just started): cannot tell
    assert unknown.status == 503 and unknown.headers == {"Retry-After": "1"} and not publisher.sent
    view.fails = False
    await asyncio.sleep(0.25)
    assert (await submit(TEN, "t", None)).status == 200  # read once: 0 pending
    view.fails = True
    await asyncio.sleep(0.25)
    unsure = await submit(TEN, "t", None)  # 10 + 10 > 15 by this process's count, and no read
    assert unsure.status == 503 and len(publisher.sent) == 1


async def test_the_rate_quota_answers_429_with_when_to_retry() -> None:
    now = [0.0]
    publisher = FakePublisher()
    submit = use_case(publisher, FakeView(), max_pending=0, rate=20, clock=lambda: now[0])
    statuses = [(await submit(TEN, "fast", None)).status for _ in range(3)]
    assert statuses == [200, 200, 200]  # 20 in the bucket, then one job into debt
    refused = await submit(TEN, "fast", None)
    assert refused.status == 429 and refused.headers == {"Retry-After": "1"}
    assert "20 images/s" in refused.body["error"] and len(publisher.sent) == 3
    assert (await submit(TEN, "slow", None)).status == 200
    now[0] = 1.0
    assert (await submit(TEN, "fast", None)).status == 200


async def test_an_idempotency_key_retry_is_counted_once() -> None:
    publisher, view = FakePublisher(), FakeView()
    submit = use_case(publisher, view, max_pending=100)
    first = await submit(TEN, "t", "key-1")
    again = await submit(TEN, "t", "key-1")
    assert first.body["job_id"] == again.body["job_id"]
    quotas: TenantQuotas = submit.quotas  # type: ignore[assignment]
    assert quotas._quota("t").pending.recent == {UUID(first.body["job_id"]): 10}  # type: ignore[union-attr]  # noqa: SLF001


async def test_jobs_other_ingest_processes_accepted_are_seen_within_one_read_interval() -> None:
    publisher, view = FakePublisher(), FakeView()
    submit = use_case(publisher, view, max_pending=100)
    assert (await submit(TEN, "t", None)).status == 200  # starts the first read beside it
    await asyncio.sleep(0.25)
    view.counted["t"] = 85  # another ingest accepted 85 images meanwhile
    assert (await submit(TEN, "t", None)).status == 200  # fits by this process's count; the read is due
    await asyncio.sleep(0.06)  # that read has landed: 85 + the 20 not yet folded here
    refused = await submit(TEN, "t", None)
    assert refused.status == 429 and "105 pending" in refused.body["error"]


async def test_without_authentication_every_job_counts_for_the_one_tenant() -> None:
    publisher, view = FakePublisher(), FakeView()
    view.counted = {"alpha": 50, "beta": 45}  # recorded while keys were on
    submit = use_case(publisher, view, max_pending=100)
    assert (await submit(TEN, None, None)).status == 429  # 95 + 10: waits for the first read
    assert len(publisher.sent) == 0
