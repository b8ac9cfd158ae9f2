"""The whole machine's CPU time, from /proc/stat's first line: what the store statistics weigh
their waits by (services/storestats/adapters/cpu.py) and what the benchmarks report as how busy
the machine was. In a container it is the host's."""

from __future__ import annotations

import os
from pathlib import Path

PROC_STAT = Path("/proc/stat")


def machine_cpu_s(path: Path = PROC_STAT) -> tuple[float, float] | None:
    """(busy, total) CPU seconds of every CPU since boot; idle and iowait are not busy. None where
    there is no /proc/stat or its first line is not the CPU line."""
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


def busy_share(before: tuple[float, float] | None, after: tuple[float, float] | None) -> float:
    """How busy the machine was between two `machine_cpu_s` readings, 0 to 1 (0 when either is
    missing or no time passed between them)."""
    if before is None or after is None or after[1] <= before[1]:
        return 0.0
    return (after[0] - before[0]) / (after[1] - before[1])
