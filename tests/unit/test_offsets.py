"""Committable offsets when records finish out of order (services/processor/offsets.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.processor.domain import OffsetTracker, possibly_processed

P0, P1 = ("jobs", 0), ("jobs", 1)


def test_nothing_started_nothing_committable() -> None:
    assert OffsetTracker().committable() == {}


def test_in_flight_offset_is_committable_floor() -> None:
    tracker = OffsetTracker()
    tracker.started(P0, 5)
    assert tracker.committable() == {P0: 5}
    assert tracker.in_flight() == 1


def test_all_finished_commits_one_past_highest() -> None:
    tracker = OffsetTracker()
    for offset in (5, 6, 7):
        tracker.started(P0, offset)
    for offset in (5, 6, 7):
        tracker.finished(P0, offset)
    assert tracker.committable() == {P0: 8}
    assert tracker.in_flight() == 0


def test_out_of_order_finish_holds_back_at_lowest_unfinished() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12, 13):
        tracker.started(P0, offset)
    tracker.finished(P0, 13)
    tracker.finished(P0, 11)
    assert tracker.committable() == {P0: 10}
    tracker.finished(P0, 10)
    assert tracker.committable() == {P0: 12}
    tracker.finished(P0, 12)
    assert tracker.committable() == {P0: 14}


def test_partitions_are_independent() -> None:
    tracker = OffsetTracker()
    tracker.started(P0, 0)
    tracker.started(P1, 40)
    tracker.started(P1, 41)
    tracker.finished(P1, 41)
    tracker.finished(P0, 0)
    assert tracker.committable() == {P0: 1, P1: 40}
    assert tracker.in_flight({P0}) == 0
    assert tracker.in_flight({P1}) == 1
    assert tracker.in_flight() == 1


def test_forget_drops_partitions() -> None:
    tracker = OffsetTracker()
    tracker.started(P0, 3)
    tracker.started(P1, 9)
    tracker.forget({P0, ("other", 7)})
    assert tracker.committable() == {P1: 9}
    assert tracker.in_flight() == 1
    tracker.started(P0, 20)
    assert tracker.committable() == {P0: 20, P1: 9}


@given(st.integers(0, 1000), st.integers(1, 30), st.data())
def test_committable_never_passes_an_unfinished_offset(start: int, n: int, data: st.DataObject) -> None:
    offsets = list(range(start, start + n))
    order = data.draw(st.permutations(offsets))
    tracker = OffsetTracker()
    for offset in offsets:
        tracker.started(P0, offset)
    unfinished = set(offsets)
    for offset in order:
        tracker.finished(P0, offset)
        unfinished.discard(offset)
        committed = tracker.committable()[P0]
        if unfinished:
            assert committed == min(unfinished)
        else:
            assert committed == start + n


@given(st.lists(st.booleans(), max_size=60), st.randoms(use_true_random=False))
def test_interleaved_start_and_finish_never_skips_work(steps: list[bool], rnd) -> None:  # noqa: ANN001
    """Records are started in offset order while earlier ones finish in random order."""
    tracker = OffsetTracker()
    next_offset, in_flight, done = 0, [], set()
    for start in steps:
        if start or not in_flight:
            tracker.started(P0, next_offset)
            in_flight.append(next_offset)
            next_offset += 1
        else:
            offset = in_flight.pop(rnd.randrange(len(in_flight)))
            tracker.finished(P0, offset)
            done.add(offset)
        smallest_unfinished = min(set(range(next_offset + 1)) - done)
        assert tracker.committable().get(P0, 0) <= smallest_unfinished


def test_only_records_already_there_at_assignment_may_have_been_processed_by_a_previous_owner() -> None:
    assert possibly_processed(41, end_at_assignment=42)  # in the partition when it was given to us
    assert not possibly_processed(42, end_at_assignment=42)  # written since: no other processor saw it
    assert possibly_processed(10_000, end_at_assignment=None)  # end unknown: look every record up
