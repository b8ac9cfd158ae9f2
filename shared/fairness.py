"""Fair sharing of work: between tenants by weight, within a tenant higher priority first, and
between a tenant's jobs of one priority in turn. Pure (no I/O, no clock): the scheduler
dispatches released jobs' tasks from it, and each processor picks its next task from it.

- **Tenants** are served as in weighted fair queueing: each has a *pass*, the work it has been
  given divided by its weight; the next unit goes to the tenant with work whose pass would be
  lowest *after* it (pass + 1/weight, its finish tag), which then pays 1/weight. Over any
  stretch where tenants stay busy, the units they get are in proportion to their weights, each
  within two units of its share; a tenant that had no work joins at the current pass, so idling
  banks no credit. It is work-conserving: as long as any tenant has work, a unit is given.
- **Within a tenant**, the job of highest priority (1 before 5) goes first; jobs of the same
  priority take turns one unit at a time, so a one-image job waits for at most one unit of
  each of its tenant's other jobs, never for a big one to drain.

A *lane* is a job's own queue of work (`Lane`): the scheduler's is a cursor over the job's
task ordinals, a processor's a deque of fetched tasks.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Lane(Protocol[T_co]):
    def __len__(self) -> int: ...
    def take(self) -> T_co: ...


@dataclass
class CursorLane:
    """A job's tasks by ordinal, `next` up to `total` (exclusive)."""

    total: int
    next: int = 0

    def __len__(self) -> int:
        return max(0, self.total - self.next)

    def take(self) -> int:
        ordinal = self.next
        self.next += 1
        return ordinal


class DequeLane(deque[T]):
    """Items queued for a job, first in first out."""

    def take(self) -> T:
        return self.popleft()


def parse_weights(raw: str) -> dict[str, float]:
    """`TENANT_WEIGHTS="team-a=3,team-b=1"` -> {"team-a": 3.0, "team-b": 1.0}; ValueError naming
    the entry that is not `tenant=positive number`."""
    weights: dict[str, float] = {}
    for position, entry in enumerate((e.strip() for e in raw.split(",")), start=1):
        if not entry:
            continue
        tenant, sep, value = entry.rpartition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or not tenant.strip() or not weight > 0 or weight == float("inf"):
            raise ValueError(f"TENANT_WEIGHTS entry {position} ({entry!r}): expected tenant=weight, weight > 0")
        weights[tenant.strip()] = weight
    return weights


@dataclass
class _Tenant:
    name: str
    weight: float
    pass_: float = 0.0
    units: int = 0
    # priority -> jobs with work, in turn
    levels: dict[int, deque[Hashable]] = field(default_factory=dict)

    def has_work(self) -> bool:
        return bool(self.levels)


class FairQueue(Generic[T]):
    """Units of work from many jobs, handed out fairly (module docstring)."""

    def __init__(self, weights: Mapping[str, float] | None = None, default_weight: float = 1.0) -> None:
        self._weights = dict(weights or {})
        self._default_weight = default_weight
        self._tenants: dict[str, _Tenant] = {}
        self._jobs: dict[Hashable, tuple[str, int, Lane[T]]] = {}  # job -> (tenant, priority, lane)
        self._active: list[tuple[float, int, str]] = []  # (finish tag, order, tenant) of tenants with work
        self._order = itertools.count()
        self._clock = 0.0  # the pass of the last tenant served: where a tenant (re)joins
        self._units = 0

    def __len__(self) -> int:
        """Units of work queued."""
        return self._units

    def __contains__(self, job: object) -> bool:
        return job in self._jobs

    def jobs(self) -> Iterator[Hashable]:
        return iter(list(self._jobs))

    def weight(self, tenant: str) -> float:
        """The tenant's weight (TENANT_WEIGHTS; unlisted tenants the default)."""
        return self._weights.get(tenant, self._default_weight)

    def units_by_tenant(self) -> dict[str, int]:
        """Units queued per tenant (tenants with none are left out)."""
        return {name: t.units for name, t in self._tenants.items() if t.units}

    def lane(self, job: Hashable) -> Lane[T] | None:
        found = self._jobs.get(job)
        return found[2] if found else None

    def add(self, tenant: str, priority: int, job: Hashable, lane: Lane[T]) -> None:
        """Queue `job`'s work (a job already queued keeps its place and gets this lane)."""
        if job in self._jobs:
            change = len(lane) - len(self._jobs[job][2])
            self._units += change
            self._tenants[self._jobs[job][0]].units += change
            self._jobs[job] = (*self._jobs[job][:2], lane)
            return
        if not len(lane):
            return
        state = self._tenants.get(tenant)
        if state is None:
            state = self._tenants[tenant] = _Tenant(tenant, self._weights.get(tenant, self._default_weight))
        was_idle = not state.has_work()
        self._jobs[job] = (tenant, priority, lane)
        state.levels.setdefault(priority, deque()).append(job)
        self._units += len(lane)
        state.units += len(lane)
        if was_idle:
            state.pass_ = max(state.pass_, self._clock)
            heapq.heappush(self._active, (state.pass_ + 1.0 / state.weight, next(self._order), tenant))

    def append(self, tenant: str, priority: int, job: Hashable, item: T) -> None:
        """Queue one more item for `job` (its lane a DequeLane)."""
        found = self._jobs.get(job)
        if found is None:
            self.add(tenant, priority, job, DequeLane([item]))
            return
        lane = found[2]
        if not isinstance(lane, DequeLane):
            raise TypeError(f"append() needs the job's lane to be a DequeLane, not a {type(lane).__name__}")
        lane.append(item)
        self._units += 1
        self._tenants[found[0]].units += 1

    def remove(self, job: Hashable) -> Lane[T] | None:
        """Take `job` out (its remaining work is forgotten); its lane, or None."""
        found = self._jobs.pop(job, None)
        if found is None:
            return None
        tenant, priority, lane = found
        self._units -= len(lane)
        self._tenants[tenant].units -= len(lane)
        level = self._tenants[tenant].levels[priority]
        level.remove(job)
        if not level:
            del self._tenants[tenant].levels[priority]
        if not self._tenants[tenant].has_work():
            self._active = [entry for entry in self._active if entry[2] != tenant]
            heapq.heapify(self._active)
        return lane

    def pop(self) -> tuple[Hashable, T] | None:
        """The next unit of work, fairly: (job, unit), or None when there is none."""
        if not self._active:
            return None
        _, _, name = self._active[0]
        tenant = self._tenants[name]
        priority = min(tenant.levels)
        level = tenant.levels[priority]
        job = level.popleft()
        lane = self._jobs[job][2]
        unit = lane.take()
        self._units -= 1
        tenant.units -= 1
        if len(lane):
            level.append(job)  # its turn comes again after the tenant's other jobs of this priority
        else:
            del self._jobs[job]
            if not level:
                del tenant.levels[priority]
        self._clock = tenant.pass_
        tenant.pass_ += 1.0 / tenant.weight
        if tenant.has_work():
            heapq.heapreplace(self._active, (tenant.pass_ + 1.0 / tenant.weight, next(self._order), name))
        else:
            heapq.heappop(self._active)
        return job, unit

    def take(self, n: int) -> list[tuple[Hashable, T]]:
        """Up to `n` units, fairly (fewer only when fewer are queued)."""
        out: list[tuple[Hashable, T]] = []
        while len(out) < n:
            unit = self.pop()
            if unit is None:
                break
            out.append(unit)
        return out
