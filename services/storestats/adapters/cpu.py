"""How busy the rest of the machine is: /proc/stat's CPU times less this process's own
(os.times, every thread), between two readings. In a container /proc/stat is the host's, which
is what the statistics share with the pipeline. Where there is no /proc/stat the reading is
None, and the statistics never wait (services/storestats/yielding.py)."""

from __future__ import annotations

import os
from pathlib import Path

from services.storestats.yielding import others_share

PROC_STAT = Path("/proc/stat")


def machine_times(path: Path = PROC_STAT) -> tuple[float, float] | None:
    """(busy, total) CPU seconds of every CPU since boot; idle and iowait are not busy."""
    try:
        with path.open() as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    try:  # user nice system idle iowait irq softirq steal (guest is counted in user already)
        ticks = [int(value) for value in fields[1:9]]
    except ValueError:
        return None
    if fields[:1] != ["cpu"] or len(ticks) < 5:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    total = sum(ticks) / hz
    return total - (ticks[3] + ticks[4]) / hz, total


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


class OthersBusy:
    """Each call: the others' share of all CPUs since the previous call (None at the first)."""

    def __init__(self, path: Path = PROC_STAT) -> None:
        self._path = path
        self._last: tuple[float, float, float] | None = None

    def __call__(self) -> float | None:
        machine = machine_times(self._path)
        if machine is None:
            return None
        reading = (*machine, own_cpu_s())
        last, self._last = self._last, reading
        if last is None:
            return None
        return others_share(reading[0] - last[0], reading[1] - last[1], reading[2] - last[2])
