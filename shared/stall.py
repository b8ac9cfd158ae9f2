"""Whether a consumer makes progress: readiness tells the truth (a consumer with lag that makes
no progress for STALL_S is not ready, and says why)."""

from __future__ import annotations

import time


class StallWatch:
    """When the consumer last made progress (a batch applied, a task finished), and the last
    error that held it up; `stalled_for` is how long it has made none past `stall_s`, else 0."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self.last_progress = time.monotonic()
        self.last_error: str | None = None

    def progressed(self) -> None:
        self.last_progress = time.monotonic()

    def failed(self, error: str) -> None:
        self.last_error = error[:300]

    def stalled_for(self) -> float:
        idle = time.monotonic() - self.last_progress
        return idle if idle > self.stall_s else 0.0
