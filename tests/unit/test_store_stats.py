"""The store statistics' pure rules: parsing the published events, reason categories, window
bucketing (faust's own formula), the window fold, the totals and the exact recount."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from faust.windows import TumblingWindow
from hypothesis import given
from hypothesis import strategies as st

from services.storestats import domain
from services.storestats.domain import CountedImage, StoreTotals
from shared.events import encode_event
from tests.support.jobs import JobEvents

T0 = datetime(2026, 11, 30, 10, 0, 30, tzinfo=UTC)


def ok(task: str, store: str = "S1", perimeter: int = 14, at: datetime = T0) -> CountedImage:
    return CountedImage(task, store, at, perimeter=perimeter)


def bad(task: str, reason: str, store: str = "S1", at: datetime = T0) -> CountedImage:
    return CountedImage(task, store, at, reason=reason)


def test_parses_both_outcomes_from_the_wire_and_ignores_other_events() -> None:
    job = JobEvents.new(("S1", 2))
    good = domain.parse_outcome(encode_event(job.ok("S1", 0, 0)))
    failed = domain.parse_outcome(encode_event(job.bad("S1", 0, 1)))
    assert good is not None and good.perimeter == 14 and good.reason is None and good.store_id == "S1"
    assert failed is not None and failed.reason == "HTTP 404" and failed.perimeter is None
    assert domain.parse_outcome(encode_event(job.released())) is None
    assert domain.parse_outcome(b'{"type": "SomethingNew", "x": 1}') is None  # additive changes are ignored


@pytest.mark.parametrize("raw", [b"not json", b'{"type": "ImageSucceeded", "task_id": "t"}',
                                 b'{"type": "ImageSucceeded", "task_id": "t", "store_id": "S",'
                                 b' "occurred_at": "2026-01-01T00:00:00Z"}'])
def test_a_malformed_outcome_is_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        domain.parse_outcome(raw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("reason", "category"), [
    ("HTTP 404 from the image server", "HTTP 404"), ("store not found", "store not found"),
    ("download timed out after 30s (3 attempts)", "download timed out"),
    ("not an image (unrecognised format)", "not an image"), ("image too large: 9000x9000 pixels", "image too large"),
    ("too many redirects (more than 3)", "too many redirects"), ("", "unknown"),
])
def test_reason_categories_drop_the_details(reason: str, category: str) -> None:
    assert domain.reason_category(reason) == category


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False), st.sampled_from([1, 60, 600]))
def test_window_start_is_fausts_tumbling_window(ts: float, size: int) -> None:
    at = datetime.fromtimestamp(ts, UTC)
    assert domain.window_start(at, size) == TumblingWindow(size).current(at.timestamp())[0]


def test_folding_counts_successes_failures_by_reason_and_the_mean_perimeter() -> None:
    stats = None
    for outcome in [ok("a", perimeter=10), ok("b", perimeter=20), bad("c", "HTTP 404"), bad("d", "HTTP 404"),
                    bad("e", "store not found")]:
        stats = domain.fold_window(stats, outcome, 60)
    assert stats is not None
    assert (stats.images, stats.succeeded, stats.mean_perimeter) == (5, 2, 15.0)
    assert stats.failed == {"HTTP 404": 2, "store not found": 1}
    assert stats.window_start == datetime(2026, 11, 30, 10, 0, tzinfo=UTC).timestamp()


def test_a_window_of_failures_only_has_no_mean() -> None:
    stats = domain.fold_window(None, bad("a", "HTTP 500"), 60)
    assert stats.mean_perimeter is None
    key, value = domain.published_record(stats, 60)
    body = json.loads(value)
    assert key == b"S1|2026-11-30T10:00:00Z"
    assert body["mean_perimeter"] is None and body["failed_by_reason"] == {"HTTP 500": 1}
    assert (body["window_start"], body["window_end"]) == ("2026-11-30T10:00:00Z", "2026-11-30T10:01:00Z")


def test_a_window_and_totals_from_grouped_rows_equal_the_fold_of_the_same_images() -> None:
    images = [ok("a", perimeter=10), ok("b", perimeter=30), bad("c", "HTTP 404"), bad("d", "HTTP 404")]
    folded = None
    for outcome in images:
        folded = domain.fold_window(folded, outcome, 60)
    rows = [(None, 2, 40), ("HTTP 404", 2, 0)]
    assert domain.window_from_rows("S1", domain.window_start(T0, 60), rows) == folded
    totals = domain.totals_from_rows([("", 5), ("HTTP 404", 2), ("store not found", 1)], 20.0)
    assert totals == StoreTotals(5, {"HTTP 404": 2, "store not found": 1}, 20.0)
    assert domain.totals_from_rows([], None) == StoreTotals()


def test_recount_counts_each_task_once_at_its_first_outcome() -> None:
    later = T0 + timedelta(minutes=3)
    outcomes = [ok("a", perimeter=10), bad("b", "HTTP 404", store="S2"),
                ok("a", perimeter=10, at=later),  # a repeat re-emitted later: not counted, not moved
                ok("c", perimeter=30, at=later)]
    windows = domain.recount(outcomes, 60)
    first = domain.window_start(T0, 60)
    assert windows[("S1", first)].succeeded == 1 and windows[("S2", first)].failed == {"HTTP 404": 1}
    assert windows[("S1", domain.window_start(later, 60))].perimeter_sum == 30
    assert sum(w.images for w in windows.values()) == 3


@pytest.mark.parametrize("raw", [
    None, b"[" * 5000 + b"]" * 5000,
    json.dumps({"type": "ImageSucceeded", "task_id": "a\u0000b", "store_id": "S1", "job_id": "j",
                "occurred_at": "2026-11-30T10:00:00Z", "perimeter": 4}).encode(),
    json.dumps({"type": "ImageSucceeded", "task_id": "a", "store_id": "S1", "job_id": "j",
                "occurred_at": "2026-11-30T10:00:00Z", "perimeter": 2**64}).encode(),
])
def test_records_the_table_would_refuse_are_value_errors_not_endless_retries(raw: bytes | None) -> None:
    """A tombstone, absurd nesting, a NUL in a text field, a perimeter over bigint: skipped."""
    with pytest.raises(ValueError):
        domain.parse_outcome(raw)  # type: ignore[arg-type]


def test_readiness_asked_before_the_consumer_has_started_is_a_503_not_a_500() -> None:
    """faust starts its web server before its consumer thread: a probe in between found
    `ConsumerNotStarted` raised through the page (a 500 and a traceback logged at ERROR)."""
    from types import SimpleNamespace

    from faust.exceptions import ConsumerNotStarted

    from services.storestats.adapters.web import readiness

    class NotStarted:
        def assignment(self) -> set[object]:
            raise ConsumerNotStarted("Consumer thread not yet started")
    stats = SimpleNamespace(app=SimpleNamespace(consumer=NotStarted()),
                            settings=SimpleNamespace(topics=SimpleNamespace(results="t.results")))
    checks, reasons = readiness(stats)  # type: ignore[arg-type]
    assert checks == {"kafka": False} and reasons == {"kafka": "the consumer is starting"}
