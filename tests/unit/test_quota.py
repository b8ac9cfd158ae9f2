"""The quota rules (services/ingest/quota.py), pure: the clock is a parameter."""

from __future__ import annotations

from uuid import UUID, uuid4

from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest.quota import REFRESH_EVERY_S, PendingImages, TenantQuota, TokenBucket

SUBMITS = st.lists(st.tuples(st.floats(0, 2), st.integers(1, 500), st.booleans()), max_size=120)


@settings(max_examples=300, deadline=None)
@given(rate=st.floats(0.5, 1000), submits=SUBMITS)
def test_images_accepted_in_any_window_stay_within_rate_times_window_plus_capacity_plus_one_job(
        rate: float, submits: list[tuple[float, int, bool]]) -> None:
    bucket, now = TokenBucket.full(rate, 0.0), 0.0
    accepted: list[tuple[float, int]] = []
    for gap, images, publish_fails in submits:
        now += gap
        if bucket.refusal(images, now) is not None:
            continue
        bucket.take(images)
        if publish_fails:  # taken, then given back: as if it had never been admitted
            bucket.give_back(images)
        else:
            accepted.append((now, images))
    for i, (start, _) in enumerate(accepted):
        for j in range(i, len(accepted)):
            window = accepted[i:j + 1]
            length = accepted[j][0] - start
            largest = max(n for _, n in window)
            assert sum(n for _, n in window) <= rate * length + bucket.capacity + largest + 1e-6


@settings(max_examples=200, deadline=None)
@given(rate=st.floats(0.5, 1000), burst=st.lists(st.integers(1, 500), min_size=1, max_size=40))
def test_a_refused_submit_is_accepted_after_its_retry_after(rate: float, burst: list[int]) -> None:
    bucket = TokenBucket.full(rate, 100.0)
    for images in burst:
        refused = bucket.refusal(images, 100.0)
        if refused is None:
            bucket.take(images)
            continue
        assert refused.quota == "rate" and refused.retry_after_s >= 1
        assert bucket.refusal(images, 100.0 + refused.retry_after_s) is None
        return


def test_the_bucket_holds_one_seconds_worth_and_may_go_into_debt_by_one_job() -> None:
    bucket = TokenBucket.full(50, 0.0)
    taken = 0
    while bucket.refusal(10, 0.0) is None:
        bucket.take(10)
        taken += 10
    assert taken == 60  # 50 in the bucket, then one more job while not in debt
    refused = bucket.refusal(10, 0.0)
    assert refused is not None and refused.retry_after_s == 1 and "50 images/s" in refused.message
    assert bucket.refusal(10, 0.19) is not None and bucket.refusal(10, 0.2) is None
    big = TokenBucket.full(5, 0.0)
    assert big.refusal(40, 0.0) is None  # larger than a second's worth: still possible
    big.take(40)
    assert big.refusal(1, 0.0).retry_after_s == 7  # type: ignore[union-attr] - a debt of 35 at 5/s


def test_pending_images_fit_up_to_the_limit_and_the_refusal_gives_the_numbers() -> None:
    pending = PendingImages(limit=100, counted=60)
    pending.reserve(uuid4(), 30)
    assert pending.estimate() == 90 and pending.fits(10) and not pending.fits(11)
    refused = pending.refusal(11)
    assert refused is not None and refused.quota == "pending" and refused.retry_after_s == 5
    assert "90 pending" in refused.message and "11" in refused.message and "100" in refused.message
    too_big = pending.refusal(101)
    assert too_big is not None and "more than the tenant's limit" in too_big.message


def test_a_read_replaces_the_sum_and_forgets_the_jobs_the_view_has_folded() -> None:
    folded, not_yet, during = uuid4(), uuid4(), uuid4()
    pending = PendingImages(limit=100)
    pending.reserve(folded, 40)
    pending.reserve(not_yet, 30)
    asked = pending.reading(now=10.0)
    pending.reserve(during, 5)  # accepted while the read runs: not asked about, kept
    pending.read(counted=40, in_view={folded} & set(asked))  # the view counts `folded` now
    assert pending.estimate() == 75 and pending.recent == {not_yet: 30, during: 5}
    pending.release(not_yet)  # its publish failed
    assert pending.estimate() == 45


def test_the_view_is_read_at_most_once_per_interval() -> None:
    pending = PendingImages(limit=100)
    assert pending.read_due(now=0.0)  # never read
    pending.reading(now=1.0)
    assert not pending.read_due(now=1.0 + REFRESH_EVERY_S / 2)
    assert pending.read_due(now=1.0 + REFRESH_EVERY_S + 0.001)


def test_a_tenant_quota_checks_the_rate_first_and_takes_nothing_when_pending_refuses() -> None:
    quota = TenantQuota(TokenBucket.full(100, 0.0), PendingImages(limit=20))
    first, second = uuid4(), uuid4()
    assert quota.admit(first, 15, 0.0) is None
    refused = quota.admit(second, 15, 0.0)
    assert refused is not None and refused.quota == "pending"
    assert quota.bucket.tokens == 85 and quota.pending.recent == {first: 15}  # type: ignore[union-attr]
    quota.release(first, 15)  # not accepted after all: tokens and reservation back
    assert quota.bucket.tokens == 100 and quota.pending.recent == {}  # type: ignore[union-attr]


def test_an_idempotency_retry_moves_the_reservation_to_the_job_it_publishes() -> None:
    quota = TenantQuota(None, PendingImages(limit=100))
    first_attempt, retry_id, earlier = uuid4(), uuid4(), uuid4()
    quota.admit(retry_id, 10, 0.0)
    assert quota.move(retry_id, first_attempt) is True
    assert quota.pending.recent == {first_attempt: 10}  # type: ignore[union-attr]
    quota.admit(earlier, 10, 0.0)
    held_elsewhere: UUID = uuid4()
    quota.admit(held_elsewhere, 10, 0.0)
    assert quota.move(held_elsewhere, earlier) is False  # an earlier request holds it: counted once
    assert quota.pending.recent == {first_attempt: 10, earlier: 10}  # type: ignore[union-attr]
