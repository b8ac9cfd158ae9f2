"""When the store statistics wait for the core (services/storestats/yielding.py), how the others'
CPU share is read (adapters/cpu.py), and what the yield does to faust's consumer and the writer
(adapters/stream.py CoreYield); no Kafka, no faust worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.storestats.adapters import cpu
from services.storestats.adapters.stream import CoreYield
from services.storestats.settings import StoreStatsSettings
from services.storestats.yielding import Mode, YieldRule, YieldState, next_state, others_share
from shared.machine import busy_share, machine_cpu_s

RULE = YieldRule(busy_above=0.9, max_wait_s=10.0)
COUNTING, WAITING, CATCHING_UP = Mode.COUNTING, Mode.WAITING, Mode.CATCHING_UP


def test_counting_waits_while_the_others_keep_the_cpus_busy_and_goes_on_when_they_leave_room() -> None:
    state = next_state(YieldState(), 0.89, now=100.0, drained=False, rule=RULE)
    assert state.mode is COUNTING
    state = next_state(state, 0.95, now=100.2, drained=False, rule=RULE)
    assert state == YieldState(WAITING, 100.2)
    # between the two levels it keeps waiting: one reading a little below does not flap it
    state = next_state(state, 0.80, now=100.4, drained=False, rule=RULE)
    assert state.mode is WAITING
    state = next_state(state, RULE.resume_below - 0.01, now=100.6, drained=False, rule=RULE)
    assert state.mode is COUNTING
    assert RULE.resume_below == pytest.approx(0.75)


def test_a_wait_ends_after_max_wait_s_and_then_counting_catches_up_before_it_may_wait_again() -> None:
    state = next_state(YieldState(), 1.0, now=0.0, drained=False, rule=RULE)
    state = next_state(state, 1.0, now=9.9, drained=False, rule=RULE)
    assert state.mode is WAITING
    state = next_state(state, 1.0, now=10.0, drained=False, rule=RULE)
    assert state.mode is CATCHING_UP
    # the machine still busy: catching up goes on until the writer found its queue empty
    state = next_state(state, 1.0, now=30.0, drained=False, rule=RULE)
    assert state.mode is CATCHING_UP
    state = next_state(state, 1.0, now=30.2, drained=True, rule=RULE)
    assert state.mode is COUNTING
    assert next_state(state, 1.0, now=30.4, drained=False, rule=RULE) == YieldState(WAITING, 30.4)


def test_an_unknown_reading_or_a_rule_of_0_never_waits() -> None:
    waiting = YieldState(WAITING, 0.0)
    assert next_state(waiting, None, now=1.0, drained=False, rule=RULE).mode is COUNTING
    never = YieldRule(busy_above=0, max_wait_s=10.0)
    assert next_state(YieldState(), 1.0, now=1.0, drained=False, rule=never).mode is COUNTING


def test_the_others_share_leaves_out_this_process_and_is_bounded() -> None:
    # two CPUs for 1 s: 2 s in all; 1.9 s busy of which 0.5 s ours
    assert others_share(1.9, 2.0, 0.5) == pytest.approx(0.7)
    assert others_share(0.1, 2.0, 0.3) == 0.0  # clocks read a tick apart
    assert others_share(2.5, 2.0, 0.0) == 1.0
    assert others_share(0.0, 0.0, 0.0) is None


def test_rules_and_settings_refuse_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="STORESTATS_YIELD_ABOVE"):
        YieldRule(busy_above=1.5, max_wait_s=1)
    with pytest.raises(ValueError, match="STORESTATS_YIELD_MAX_S"):
        YieldRule(busy_above=0.9, max_wait_s=0)
    with pytest.raises(ValidationError, match="at most half of STALL_S"):
        StoreStatsSettings(storestats_yield_max_s=31, stall_s=60)
    assert StoreStatsSettings(storestats_yield_max_s=30, stall_s=60).yield_rule.max_wait_s == 30
    assert StoreStatsSettings().yield_rule == YieldRule(0.9, 10.0)


def test_the_machine_reading_counts_idle_and_iowait_as_not_busy(tmp_path: Path) -> None:
    hz = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"
    #                 user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text(f"cpu  {hz * 3} {hz} {hz * 2} {hz * 10} {hz * 4} 0 {hz} 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    assert machine_cpu_s(stat) == pytest.approx((7.0, 21.0))
    assert machine_cpu_s(tmp_path / "missing") is None
    for odd in ("intr 1 2 3\n", "cpu  1 2 3 4\n", "cpu  1 2 x 4 5 6\n", ""):
        (tmp_path / "odd").write_text(odd)
        assert machine_cpu_s(tmp_path / "odd") is None, odd
    assert busy_share((7.0, 21.0), (10.0, 25.0)) == pytest.approx(0.75)
    assert busy_share(None, (10.0, 25.0)) == busy_share((7.0, 21.0), (7.0, 21.0)) == 0.0  # nothing measured


def test_the_others_reading_is_taken_between_two_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hz = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"
    own = iter([1.0, 1.5])
    monkeypatch.setattr(cpu, "own_cpu_s", lambda: next(own))
    others = cpu.OthersBusy(stat)
    stat.write_text(f"cpu  {hz * 10} 0 0 {hz * 10} 0 0 0 0\n")
    assert others() is None  # the first reading starts the interval
    stat.write_text(f"cpu  {hz * 11} 0 {hz // 2} {hz * 10} {hz // 2} 0 0 0\n")  # 2 s: 1.5 busy, 0.5 ours
    assert others() == pytest.approx(0.5)
    assert cpu.OthersBusy(tmp_path / "missing")() is None


def test_the_writer_holds_while_waiting_and_goes_on_at_room_or_after_the_max_wait() -> None:
    readings = iter([0.95, 0.95, 0.5, 1.0, 1.0, 1.0, 1.0])
    times = iter([0.0, 0.2, 0.4, 0.6, 10.6, 10.8, 11.0])
    core = CoreYield(RULE, others_busy=lambda: next(readings), clock=lambda: next(times))
    core.step()
    assert core.state.mode is WAITING and not core.may_count.is_set()
    core.step()
    assert not core.may_count.is_set()
    core.step()  # room again
    assert core.may_count.is_set()
    core.step()  # busy again at 0.6 s
    assert not core.may_count.is_set()
    core.step()  # 10 s of waiting: it goes on whatever the load, and catches up
    assert core.state.mode is CATCHING_UP and core.may_count.is_set()
    core.counted(newest_record_age_s=5.0)  # a batch from the backlog: not caught up yet
    core.step()
    assert core.state.mode is CATCHING_UP
    core.counted(newest_record_age_s=0.3)  # records written a moment ago: caught up
    core.step()
    assert core.state.mode is COUNTING and core.may_count.is_set()


def test_no_wait_while_faust_rebalances_or_stops_it_waits_for_the_held_events_acks() -> None:
    urgent = [False]
    core = CoreYield(RULE, others_busy=lambda: 1.0, clock=lambda: 0.0, urgent=lambda: urgent[0])
    core.step()
    assert not core.may_count.is_set()
    urgent[0] = True
    core.step()
    assert core.may_count.is_set() and core.state.mode is COUNTING
