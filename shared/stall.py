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


class JoinWatch:
    """How long a consumer has waited for its group to assign it partitions (a fetch that does
    not return: aiokafka waits without a limit while the consumer joins). A surplus member with
    nothing assigned is not waiting: its fetches return, empty. `grace_s` is how long a fetch may
    take beyond its own timeout before it counts as waiting; `overdue` past `deadline_s`."""

    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self.grace_s = min(10.0, deadline_s / 4)  # a normal join: a few seconds; a rebalance: longer
        self.since: float | None = None

    def restart(self) -> None:
        """A new consumer: it has not waited yet."""
        self.since = None

    def waiting(self, now: float) -> float:
        """A fetch timed out waiting: how long the consumer has waited so far."""
        if self.since is None:
            self.since = now - self.grace_s  # the fetch that timed out waited this long already
        return now - self.since

    def joined(self) -> None:
        self.since = None

    def waited(self, now: float) -> float:
        return 0.0 if self.since is None else now - self.since

    def overdue(self, now: float) -> bool:
        return self.waited(now) >= self.deadline_s
