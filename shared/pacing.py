"""Adaptive batching: wait for more events only while a stream is busy.

Every stage pays a fixed cost per round (a fetch, a transaction, a produce request), so a
trickle of a few hundred events a second costs several times more CPU per event than a burst
that arrives in thousands. Waiting a few milliseconds for more events makes rounds larger, but
a fixed wait would be paid by every hop of an idle request too (one job, submit -> completed,
crosses three consumers). So a stage waits only when its recent arrival rate says more events
are coming: quiet -> no wait at all; busy -> up to `busy_wait_s`.

The rate is an exponentially decayed count of arrivals (time constant `tau_s`): for a steady
stream of r events/s it tends to r, and it halves within `tau_s * ln 2` of the stream stopping,
so one small job on a quiet stack never sees a wait (one of hundreds of images is a burst, and
is batched like one), and a stream that ends stops waiting within a second or two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class ArrivalRate:
    """Events per second, decayed exponentially with time constant `tau_s`."""

    tau_s: float = 0.5
    _rate: float = 0.0
    _at: float | None = None

    def arrived(self, count: int, now: float) -> None:
        self._rate = self.at(now) + count / self.tau_s
        self._at = now

    def at(self, now: float) -> float:
        if self._at is None:
            return 0.0
        return self._rate * math.exp(-max(0.0, now - self._at) / self.tau_s)


@dataclass
class Pacer:
    """How long a stage may wait to gather a larger round: `busy_wait_s` while at least
    `min_expected` events would arrive in that wait at the current rate, else zero."""

    busy_wait_s: float
    min_expected: float = 4.0
    rate: ArrivalRate = field(default_factory=ArrivalRate)

    def arrived(self, count: int, now: float) -> None:
        self.rate.arrived(count, now)

    def busy(self, now: float) -> bool:
        return self.busy_wait_s > 0 and self.rate.at(now) * self.busy_wait_s >= self.min_expected

    def wait_s(self, now: float) -> float:
        return self.busy_wait_s if self.busy(now) else 0.0
