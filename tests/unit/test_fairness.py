"""The fair picker (shared/fairness.py), property-tested: it never starves a job, it respects
weights between busy tenants, it is work-conserving, and within a tenant a more urgent job
always goes first."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.fairness import CursorLane, DequeLane, FairQueue, parse_weights

TENANTS = ["a", "b", "c", "d"]
jobs_strategy = st.lists(st.tuples(st.sampled_from(TENANTS), st.integers(1, 5), st.integers(1, 30)),
                         min_size=1, max_size=25)
weights_strategy = st.dictionaries(st.sampled_from(TENANTS), st.integers(1, 5).map(float))


def fill(queue: FairQueue[int], jobs: list[tuple[str, int, int]], offset: int = 0) -> dict[int, tuple[str, int]]:
    info = {}
    for i, (tenant, priority, units) in enumerate(jobs, start=offset):
        queue.add(tenant, priority, i, CursorLane(units))
        info[i] = (tenant, priority)
    return info


@settings(max_examples=200, deadline=None)
@given(jobs_strategy, weights_strategy, st.lists(st.integers(0, 40), min_size=1, max_size=10))
def test_it_is_work_conserving_and_every_unit_comes_out_once(jobs: list[tuple[str, int, int]],
                                                              weights: dict[str, float], takes: list[int]) -> None:
    queue: FairQueue[int] = FairQueue(weights)
    fill(queue, jobs)
    total = sum(units for *_, units in jobs)
    seen: Counter[tuple[object, int]] = Counter()
    for n in takes:
        before = len(queue)
        got = queue.take(n)
        assert len(got) == min(n, before)  # never idle while work is queued
        assert len(queue) == before - len(got)
        seen.update(got)
    rest = queue.take(total)
    seen.update(rest)
    assert len(queue) == 0 and queue.pop() is None
    assert sorted(seen) == sorted((job, ordinal) for job, (*_, units) in enumerate(jobs) for ordinal in range(units))
    assert max(seen.values()) == 1


@settings(max_examples=200, deadline=None)
@given(jobs_strategy, weights_strategy)
def test_within_a_tenant_the_most_urgent_job_goes_first(jobs: list[tuple[str, int, int]],
                                                        weights: dict[str, float]) -> None:
    queue: FairQueue[int] = FairQueue(weights)
    info = fill(queue, jobs)
    left = {job: units for job, (*_, units) in enumerate(jobs)}
    while (unit := queue.pop()) is not None:
        job, _ = unit
        tenant, priority = info[job]  # type: ignore[index]
        assert priority == min(info[j][1] for j, n in left.items() if n and info[j][0] == tenant)
        left[job] -= 1  # type: ignore[index]


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(TENANTS), st.integers(1, 5).map(float), min_size=2), st.integers(50, 400))
def test_busy_tenants_share_in_proportion_to_their_weights(weights: dict[str, float], n: int) -> None:
    queue: FairQueue[int] = FairQueue(weights)
    for i, tenant in enumerate(weights):
        queue.add(tenant, 3, i, CursorLane(10 * n))  # every tenant stays busy throughout
    served = Counter(job for job, _ in queue.take(n))
    total = sum(weights.values())
    for i, (tenant, weight) in enumerate(weights.items()):
        assert abs(served[i] - n * weight / total) <= 2.0, (tenant, served, weights)


@settings(max_examples=150, deadline=None)
@given(jobs_strategy, weights_strategy, st.sampled_from(TENANTS), st.integers(0, 50))
def test_no_job_starves(jobs: list[tuple[str, int, int]], weights: dict[str, float], tenant: str, before: int) -> None:
    """A job of its tenant's most urgent priority is served within (jobs ahead of it in its
    tenant's turn + 1) turns of its tenant, and its tenant gets a turn at least every
    (total weight / its weight + tenants) units."""
    queue: FairQueue[int] = FairQueue(weights)
    fill(queue, jobs)
    queue.take(before)
    urgent = 0
    queue.add(tenant, urgent, "new", CursorLane(1))
    ahead = sum(1 for job in queue.jobs() if job != "new" and _tenant_of(jobs, job) == tenant
                and _priority_of(jobs, job) == urgent)
    active = {t for t, *_ in jobs} | {tenant}
    total_weight = sum(weights.get(t, 1.0) for t in active)
    bound = (ahead + 1) * (math.ceil(total_weight / weights.get(tenant, 1.0)) + len(active))
    for _ in range(bound):
        unit = queue.pop()
        assert unit is not None
        if unit[0] == "new":
            return
    pytest.fail(f"the new job was not served within {bound} units")


def _tenant_of(jobs: list[tuple[str, int, int]], job: object) -> str | None:
    return jobs[job][0] if isinstance(job, int) else None


def _priority_of(jobs: list[tuple[str, int, int]], job: object) -> int | None:
    return jobs[job][1] if isinstance(job, int) else None


def test_a_small_job_never_waits_for_a_big_one_of_its_own_tenant_to_drain() -> None:
    queue: FairQueue[int] = FairQueue()
    queue.add("a", 3, "big", CursorLane(30_000))
    queue.take(100)
    queue.add("a", 3, "small", CursorLane(1))
    assert [job for job, _ in queue.take(2)] == ["big", "small"]  # one unit of the big job, then its turn


def test_a_tenant_that_was_idle_banks_no_credit() -> None:
    queue: FairQueue[int] = FairQueue()
    queue.add("a", 3, "a1", CursorLane(1000))
    queue.add("b", 3, "b1", CursorLane(1))
    queue.take(500)  # b's one unit went early; a ran alone for the rest
    queue.add("b", 3, "b2", CursorLane(1000))
    served = Counter(job for job, _ in queue.take(200))
    assert served["b2"] == 100 and served["a1"] == 100  # b joins at the current pass: an even split


def test_a_processor_lane_hands_out_its_items_in_order() -> None:
    queue: FairQueue[str] = FairQueue({"a": 2})
    queue.add("a", 3, "job", DequeLane(["t0", "t1", "t2"]))
    queue.add("b", 1, "other", DequeLane(["u0"]))
    got = queue.take(10)
    assert [unit for job, unit in got if job == "job"] == ["t0", "t1", "t2"] and len(got) == 4
    assert queue.remove("job") is None


def test_removing_a_job_forgets_its_work() -> None:
    queue: FairQueue[int] = FairQueue()
    queue.add("a", 3, "x", CursorLane(5))
    queue.add("a", 3, "y", CursorLane(5))
    queue.pop()
    assert isinstance(queue.remove("x"), CursorLane) and len(queue) in (5, 4)
    assert {job for job, _ in queue.take(10)} == {"y"} and len(queue) == 0


@pytest.mark.parametrize(("raw", "expected"), [
    ("", {}), ("team-a=3,team-b=1", {"team-a": 3.0, "team-b": 1.0}), (" a = 0.5 , ", {"a": 0.5}),
])
def test_weights_are_parsed(raw: str, expected: dict[str, float]) -> None:
    assert parse_weights(raw) == expected


@pytest.mark.parametrize("raw", ["a", "a=0", "a=-1", "=3", "a=x", "a=inf"])
def test_a_malformed_weight_names_its_entry(raw: str) -> None:
    with pytest.raises(ValueError, match="TENANT_WEIGHTS entry 1"):
        parse_weights(raw)
