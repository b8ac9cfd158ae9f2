"""How busy the rest of the machine is: its CPU times (shared.machine, /proc/stat) less this
process's own (os.times, every thread), between two readings. In a container /proc/stat is the
host's (where each service has its own CPU limit the host rarely looks busy: docs/operations.md).
Where there is no /proc/stat the reading is None, and the statistics never wait
(services/storestats/yielding.py)."""

from __future__ import annotations

import os
from pathlib import Path

from services.storestats.yielding import others_share
from shared.machine import PROC_STAT, machine_cpu_s


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


class OthersBusy:
    """Each call: the others' share of all CPUs since the previous call (None at the first)."""

    def __init__(self, path: Path = PROC_STAT) -> None:
        self._path = path
        self._last: tuple[float, float, float] | None = None

    def __call__(self) -> float | None:
        machine = machine_cpu_s(self._path)
        if machine is None:
            return None
        reading = (*machine, own_cpu_s())
        last, self._last = self._last, reading
        if last is None:
            return None
        return others_share(reading[0] - last[0], reading[1] - last[1], reading[2] - last[2])
