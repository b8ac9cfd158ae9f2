"""The release timer of one scheduler instance: the in-memory schedule of the partitions it
owns, the loop that releases due jobs, and the read-ahead that keeps their events in memory.

A timer sleeps exactly until the earliest due time (woken early when an earlier job arrives),
hands the due jobs' `JobReleased` to the idempotent producer (acks=all) and the jobs to the
dispatcher (dispatch.py), which sends their tasks as the processors take work, fairly. A
confirmation task waits for the acknowledgements and only then marks the rows released, while
the loop goes on releasing the next due jobs (so one broker round trip never delays the next
release). A crash before the mark re-releases the job on restart, dispatched on from its stored
cursor; tasks keep their `task_id`, so the processors and the status fold ignore a repeat:
nothing fires twice in effect. Jobs due within a few seconds keep their event in memory, so
releasing them reads nothing.

Cancel and reschedule are decided here too (`decide`), by this instance as the job's release
owner: under `lock`, which is held while due jobs are popped and handed to the producer, so a
command sees a job either waiting here or popped. The pure rule is the domain's `decide_all`;
the CommandLedger port makes the decisions durable with their effects in one transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

from prometheus_client import Counter, Gauge

from services.scheduler.domain import Decided, Decision, Found, RecentlyReleased, Schedule, decide_all, released
from services.scheduler.handlers.dispatch import Dispatcher, wait_or_resend
from services.scheduler.ports import Acks, CommandLedger, Publisher, ReleaseStore
from services.scheduler.settings import SchedulerSettings
from shared.events import JobCommand, JobSubmitted
from shared.group_commit import GroupCommit
from shared.retry import retry_record_work
from shared.runtime import exit_if_it_dies
from shared.waits import woken_within

log = logging.getLogger(__name__)
HOT_HORIZON_S = 5.0
PREFETCH_S = 1.0  # how far ahead of their due time jobs' events are read into memory
PREFETCH_EVERY_S = 0.25
HOT_MAX = 20_000
RELEASED_LATELY_MAX = 100_000  # ids (a hard bound; they go RELEASED_LATELY_S after their mark)
RELEASED_LATELY_S = 60.0  # a release is marked in the table within seconds
# Release batches handed to the producer, not yet acknowledged. Marking an acknowledged batch
# holds no place: with PostgreSQL down the marks wait (only jobs read ahead, at most HOT_MAX, can
# be released then), and a crash then releases those jobs again, with the same task ids.
MAX_UNCONFIRMED_RELEASES = 16
MARK_LINGER_S = 0.1  # acknowledged releases are marked together this often (shared/group_commit.py)
Submitted = list[tuple[int, JobSubmitted]]  # (partition, event)
Commands = list[tuple[int, JobCommand]]  # (partition, command)
PENDING = Gauge("imagejobs_scheduler_pending_jobs", "Jobs waiting for their time (this instance)")
RELEASED = Counter("imagejobs_scheduler_released_total", "Jobs released")
COMMANDS = Counter("imagejobs_scheduler_commands_total", "Cancel and reschedule commands decided",
                   ["command", "decision"])


class Releaser:
    def __init__(self, settings: SchedulerSettings, store: ReleaseStore, publisher: Publisher,
                 ledger: CommandLedger, dispatcher: Dispatcher) -> None:
        self.settings = settings
        self.store, self.publisher, self.ledger = store, publisher, ledger
        # releases acknowledged meanwhile are marked in one statement (shared/group_commit.py)
        self._marks: GroupCommit[JobSubmitted] = GroupCommit(store.mark_released, MARK_LINGER_S)
        self.dispatcher = dispatcher
        self.schedule = Schedule()
        self.wakeup = asyncio.Event()
        self.lock = asyncio.Lock()
        # JobSubmitted events of jobs due within HOT_HORIZON_S, kept from the consume loop so
        # their release needs no read of the table (bounded: beyond it the table is read).
        self._hot: dict[UUID, tuple[int, JobSubmitted]] = {}
        self._confirms: set[asyncio.Task[None]] = set()
        self._changed_while_prefetching: set[UUID] | None = None
        # job_id -> partition of jobs already due when loaded on assignment: the previous owner
        # may have released them just before it died, so no command may take them back until
        # this instance has released them too
        self._maybe_released: dict[UUID, int] = {}
        # job_id -> tasks already dispatched, of pending jobs found due on assignment (their
        # release was begun by the process that died): dispatched on from there when released
        self._resume: dict[UUID, int] = {}
        self._confirming = asyncio.Semaphore(MAX_UNCONFIRMED_RELEASES)
        # jobs this instance released lately (see RecentlyReleased: why, and how long)
        self._released_lately = RecentlyReleased(RELEASED_LATELY_S, RELEASED_LATELY_MAX)

    # -- the schedule in memory ------------------------------------------------------------
    def add_submitted(self, submitted: Submitted, owned: set[int]) -> None:
        """Add the stored jobs of partitions still owned to the timer (a revoked partition's new
        owner loads them from the table); wake the release loop if one is due earlier."""
        earliest = self.schedule.next_due_at()
        horizon = datetime.now(UTC) + timedelta(seconds=HOT_HORIZON_S)
        for partition, event in submitted:
            if (partition not in owned or event.job_id in self._released_lately
                    or not self.schedule.add(event.job_id, event.scheduled_time, partition)):
                continue
            if event.scheduled_time <= horizon and len(self._hot) < HOT_MAX:
                self._hot[event.job_id] = (partition, event)
            if earliest is None or event.scheduled_time < earliest:
                self.wakeup.set()
        PENDING.set(len(self.schedule))

    def holds(self, job_id: UUID) -> bool:
        """The job waits in this timer and no release of it can have begun."""
        return job_id in self.schedule and job_id not in self._maybe_released

    # -- cancel and reschedule: decided by the job's release owner ---------------------------
    async def decide(self, commands: Commands, owned: Callable[[], set[int]]) -> list[Decision]:
        """Decide the commands, make the decisions durable, apply them to the timer and hand
        their events to the producer, all under the release lock (so they are ordered after any
        release that popped the job first); then wait for the acknowledgements, so the caller
        may commit the commands' offsets. `owned` is asked inside the lock, after the decisions
        are durable: a partition assigned back while they were settled was loaded with the new
        times only if it loaded after them, and otherwise the timer must move the job itself."""
        job_commands = [c for _, c in commands]
        async with self.lock:
            decided = await retry_record_work("deciding commands", lambda: self.ledger.settle(
                job_commands, self._answer(job_commands)))
            partition_of: dict[UUID, int] = {c.job_id: p for p, c in commands}
            self.apply_decisions([d for d, new in decided if new], partition_of, owned())
            decisions = [d for d, _ in decided]
            acks = await self.ledger.publish(decisions)
        await retry_record_work("publishing decisions", lambda: wait_or_resend(
            acks, lambda: self.ledger.publish(decisions)))
        for decision in decisions:
            COMMANDS.labels(decision.command, "accepted" if decision.accepted else "refused").inc()
        return decisions

    def _answer(self, commands: list[JobCommand]) -> Callable[[Found], Decided]:
        """The rule applied to what the table holds: a pending job this timer no longer holds
        (popped, or possibly released by a process that died) is being released."""
        return lambda found: decide_all(commands, found, lambda job_id: not self.holds(job_id))

    def apply_decisions(self, decisions: list[Decision], partition_of: dict[UUID, int], owned: set[int]) -> None:
        """The timer follows the table: a cancelled job is forgotten, a moved one falls due at
        its new time (its event is read again from the table when it does)."""
        for d in (d for d in decisions if d.accepted):
            self._hot.pop(d.job_id, None)
            if self._changed_while_prefetching is not None:
                self._changed_while_prefetching.add(d.job_id)  # a read-ahead in flight must not keep it
            if d.command == "cancel":
                self.schedule.remove(d.job_id)
            elif partition_of[d.job_id] in owned and d.scheduled_time is not None:
                earliest = self.schedule.next_due_at()
                self.schedule.move(d.job_id, d.scheduled_time, partition_of[d.job_id])
                if earliest is None or d.scheduled_time < earliest:
                    self.wakeup.set()
        PENDING.set(len(self.schedule))

    async def forget(self, lost: set[int]) -> None:
        """Partitions revoked: let in-flight releases be marked, then drop their jobs."""
        async with self.lock:
            await self.wait_confirmed()
            await self.dispatcher.forget(lost)
            self.schedule.drop_partitions(lost)
            self._hot = {j: h for j, h in self._hot.items() if h[0] not in lost}
            for job_id in [j for j, p in self._maybe_released.items() if p in lost]:
                self._resume.pop(job_id, None)  # loaded with the partition: its new owner resumes it
            self._maybe_released = {j: p for j, p in self._maybe_released.items() if p not in lost}

    async def load(self, partitions: list[int]) -> None:
        now = datetime.now(UTC)
        for job_id, due_at, partition, dispatched in await self.store.load_pending(partitions):
            if self.schedule.add(job_id, due_at, partition) and due_at <= now:
                self._maybe_released[job_id] = partition
                if dispatched:
                    self._resume[job_id] = dispatched
        await self.dispatcher.load(partitions)
        PENDING.set(len(self.schedule))
        log.info("owning partitions %s; %d jobs pending", partitions, len(self.schedule))
        self.wakeup.set()

    # -- release ----------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            self.wakeup.clear()  # before reading the schedule, so no wake-up is missed
            next_due = self.schedule.next_due_at()
            delay = 3600.0 if next_due is None else (next_due - datetime.now(UTC)).total_seconds()
            if delay > 0:
                await woken_within(self.wakeup, min(delay, 3600.0))
                continue
            async with self.lock:
                due = self.take_due(datetime.now(UTC))
                jobs = await retry_record_work("loading due jobs", lambda d=list(due): self._load_events(d)) \
                    if due else []
                if jobs:
                    acks = await retry_record_work("releasing jobs", lambda j=jobs: self._announce(j))
                    for job in jobs:  # its tasks go as the processors take work, fairly
                        self.dispatcher.add(job, due[job.job_id], self._resume.pop(job.job_id, 0))
                    await self._confirming.acquire()
                    confirm = asyncio.create_task(self._confirm(jobs, acks))
                    self._confirms.add(confirm)
                    confirm.add_done_callback(self._confirms.discard)
                    exit_if_it_dies(confirm, "confirming a release")  # restarted, the release is redone
            PENDING.set(len(self.schedule))

    async def read_ahead(self) -> None:
        """Read ahead, beside the release loop (never blocking it), the events of jobs due within
        PREFETCH_S, so that when they fall due their release reads nothing: the timer's
        precision is one produce call, not a query. A failure is only logged: those jobs are
        then read at their due time."""
        while True:
            try:
                await self._prefetch()
            except Exception as exc:  # noqa: BLE001 - the due-time read is the fallback
                log.warning("reading due jobs ahead failed (%s); they will be read when due", exc)
            await asyncio.sleep(PREFETCH_EVERY_S)

    async def _prefetch(self) -> None:
        horizon = datetime.now(UTC) + timedelta(seconds=PREFETCH_S)
        wanted = [(j, p) for j, p in self.schedule.due_before(horizon, HOT_MAX - len(self._hot))
                  if j not in self._hot]
        if not wanted:
            return
        self._changed_while_prefetching = set()
        try:
            rows = await self.store.pending_events([j for j, _ in wanted])
            partition_of = dict(wanted)
            for start in range(0, len(rows), 100):
                for raw in rows[start:start + 100]:
                    event = JobSubmitted.model_validate_json(raw)
                    # still pending here (not released, revoked, cancelled or moved meanwhile)
                    if event.job_id in self.schedule and event.job_id not in self._changed_while_prefetching:
                        self._hot[event.job_id] = (partition_of[event.job_id], event)
                await asyncio.sleep(0)  # parse in slices: a release due now goes first
        finally:
            self._changed_while_prefetching = None

    async def _load_events(self, job_ids: list[UUID]) -> list[JobSubmitted]:
        """The due jobs' events: from memory when read ahead or stored just now, else from
        the table."""
        hot = [self._hot.pop(j)[1] for j in job_ids if j in self._hot]
        found = {e.job_id for e in hot}
        cold = [j for j in job_ids if j not in found]
        if not cold:
            return hot
        rows = await self.store.pending_events(cold)
        return hot + [JobSubmitted.model_validate_json(raw) for raw in rows]

    def take_due(self, now: datetime) -> dict[UUID, int]:
        """The next due jobs (job_id -> partition), out of the timer for good: from here on a
        re-published submit of one of them is not held again."""
        due = dict(self.schedule.pop_due_entries(now, self.settings.scheduler_release_batch))
        for job_id in due:
            self._maybe_released.pop(job_id, None)
            self._released_lately.released(job_id)
        self._released_lately.forget_old(time.monotonic())
        return due

    async def _announce(self, jobs: list[JobSubmitted]) -> Acks:
        """Hand each job's `JobReleased` to the producer; returns the acknowledgements to wait
        for (not waiting here lets the next due jobs go out meanwhile)."""
        return await self.publisher.to_jobs([released(job) for job in jobs])

    async def _confirm(self, jobs: list[JobSubmitted], acks: Acks) -> None:
        """After the broker acknowledged the jobs' `JobReleased`, mark them released. Until then a
        crash re-releases them on restart (tasks keep their task_id: nothing twice in effect)."""
        try:
            try:
                await retry_record_work("releasing jobs",
                                        lambda: wait_or_resend(acks, lambda: self._announce(jobs)))
            finally:
                self._confirming.release()  # acknowledged: the mark waits without holding a place
            await retry_record_work("marking jobs released", lambda: self._marks.write(jobs))
            RELEASED.inc(len(jobs))
        finally:
            self._released_lately.marked((job.job_id for job in jobs), time.monotonic())

    async def wait_confirmed(self) -> None:
        """Every release handed to the producer is acknowledged and marked."""
        await asyncio.gather(*list(self._confirms), return_exceptions=True)
