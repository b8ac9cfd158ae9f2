"""When the store statistics wait for the core: a pure rule, no clock, no /proc.

The statistics are a report downstream of the pipeline, and on a machine the pipeline
saturates they cost it more than their own CPU: each counted image is also a row in
PostgreSQL and a fetch from Kafka, which run at their own priority whatever this process's
niceness is. Measured on the stack as `make run` starts it (two cores, 10,000 images due at
once): at `STORESTATS_NICE` 19 the statistics still spent 0.05-0.08 s of CPU per 1,000 images
inside the burst, SCHED_IDLE instead made bursts 1-4% faster, and this wait 3-14% (webhooks'
median 2,887 -> 3,264 images/s; docs/architecture.md, "CPU priority", has the pairs).

So while the rest of the machine keeps every CPU busy (`busy_above` of their time, this
process's own use not counted), counting waits: no batch is written, and faust stops fetching
once its buffer is full. It goes on once the others leave room (below `resume_below`,
HYSTERESIS less), or after `max_wait_s` whatever the load; it then counts until it has caught
up (a batch whose newest record is less than a second old) before it may wait again, so under
load that never ends the statistics lag by about `max_wait_s` plus the time to catch up,
never more and more. Nothing is lost or counted twice by waiting: the
records stay in Kafka, and the offsets are committed only for what was counted."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Mode(Enum):
    COUNTING = "counting"
    WAITING = "waiting"  # the others keep the CPUs busy: nothing is counted (nor fetched, buffers full)
    CATCHING_UP = "catching up"  # waited max_wait_s: counts until it has caught up


HYSTERESIS = 0.15  # waiting ends below busy_above less this: one busy reading does not flap it


@dataclass(frozen=True)
class YieldRule:
    busy_above: float  # the others' share of all CPUs at or above which counting waits (0: never)
    max_wait_s: float  # the longest wait, load or not

    def __post_init__(self) -> None:
        if not 0 <= self.busy_above <= 1:
            raise ValueError(f"STORESTATS_YIELD_ABOVE must be a share of the CPUs from 0 (never wait) "
                             f"to 1, not {self.busy_above}")
        if self.max_wait_s <= 0:
            raise ValueError(f"STORESTATS_YIELD_MAX_S must be positive, not {self.max_wait_s}")

    @property
    def resume_below(self) -> float:
        return max(0.0, self.busy_above - HYSTERESIS)


@dataclass(frozen=True)
class YieldState:
    mode: Mode = Mode.COUNTING
    since: float = 0.0  # when the wait began (monotonic seconds)


def next_state(state: YieldState, others_busy: float | None, now: float, drained: bool,
               rule: YieldRule) -> YieldState:
    """The mode after one reading of the others' CPU share (None: unknown, as on a system
    without /proc/stat, or count now, as when faust rebalances or stops). `drained`: the writer
    counted records written less than a second ago since the last reading (it has caught up)."""
    if state.mode is Mode.CATCHING_UP:
        return YieldState() if drained else state
    if others_busy is None or rule.busy_above <= 0:
        return YieldState()
    if state.mode is Mode.COUNTING:
        return YieldState(Mode.WAITING, now) if others_busy >= rule.busy_above else state
    if others_busy < rule.resume_below:
        return YieldState()
    if now - state.since >= rule.max_wait_s:
        return YieldState(Mode.CATCHING_UP, state.since)
    return state


def others_share(machine_busy_s: float, machine_total_s: float, own_s: float) -> float | None:
    """The share of all CPUs the other processes used over an interval: the machine's busy
    time less this process's own, over the machine's total (every CPU's time). None when the
    interval measured nothing."""
    if machine_total_s <= 0:
        return None
    return min(1.0, max(0.0, (machine_busy_s - own_s) / machine_total_s))
