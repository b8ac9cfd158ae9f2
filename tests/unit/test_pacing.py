"""Adaptive batching (shared/pacing.py): a stage waits for a larger round only while events
stream in, never for a lone event, and stops waiting soon after a stream ends."""

from __future__ import annotations

import pytest

from shared.pacing import ArrivalRate, Pacer


def stream(pacer: Pacer, per_s: float, seconds: float, start: float = 0.0, per_round: int = 1) -> float:
    """Feed `per_s` events a second for `seconds`, `per_round` at a time; returns the end time."""
    gap = per_round / per_s
    now = start
    while now < start + seconds:
        pacer.arrived(per_round, now)
        now += gap
    return now


def test_a_steady_stream_is_measured_at_its_rate() -> None:
    rate = ArrivalRate(tau_s=0.5)
    for i in range(2000):
        rate.arrived(1, i / 400)
    assert rate.at(1999 / 400) == pytest.approx(400, rel=0.05)


def test_the_rate_decays_once_the_stream_stops() -> None:
    rate = ArrivalRate(tau_s=0.5)
    for i in range(2000):
        rate.arrived(1, i / 400)
    end = 1999 / 400
    assert rate.at(end + 0.5 * 0.6931) == pytest.approx(200, rel=0.05)  # halved after tau * ln 2
    assert rate.at(end + 5) < 1


def test_a_lone_job_never_waits() -> None:
    """One job's events at a stage: a handful within a few tens of milliseconds."""
    pacer = Pacer(busy_wait_s=0.02)
    for i, at in enumerate((0.0, 0.003, 0.025, 0.026, 0.040)):
        pacer.arrived(1, at)
        assert pacer.wait_s(at) == 0.0, f"waited after event {i}"


def test_a_busy_stream_waits_and_a_quiet_one_does_not() -> None:
    pacer = Pacer(busy_wait_s=0.02, min_expected=4)
    end = stream(pacer, per_s=400, seconds=2)  # 8 events expected in a 20 ms wait
    assert pacer.wait_s(end) == 0.02
    quiet = Pacer(busy_wait_s=0.02, min_expected=4)
    end = stream(quiet, per_s=100, seconds=2)  # 2 expected: not worth waiting for
    assert quiet.wait_s(end) == 0.0


def test_rounds_of_many_events_count_as_many() -> None:
    pacer = Pacer(busy_wait_s=0.02, min_expected=4)
    end = stream(pacer, per_s=1000, seconds=1, per_round=50)  # a round of 50 every 50 ms
    assert pacer.busy(end)


def test_waiting_stops_soon_after_the_stream_ends() -> None:
    pacer = Pacer(busy_wait_s=0.02, min_expected=4)
    end = stream(pacer, per_s=1000, seconds=2)
    assert pacer.busy(end)
    assert not pacer.busy(end + 1.0)  # 1000/s decays below 200/s within tau * ln 5 = 0.8 s


def test_zero_turns_waiting_off() -> None:
    pacer = Pacer(busy_wait_s=0.0)
    end = stream(pacer, per_s=5000, seconds=1)
    assert pacer.wait_s(end) == 0.0
