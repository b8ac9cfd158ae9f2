"""Progress streams: `GET /api/jobs/{job_id}/events` follows a job until it is final.

Every open stream of a process shares one `ProgressHub`: it reads all the watched jobs from
the view in one query per tick (STATUS_STREAM_POLL_S) and wakes the streams whose job changed;
between ticks, this process's fold nudges it with the jobs each committed batch touched, so
those streams move at once (the tick is for jobs other status instances fold). While this
process's fold holds every partition (`domain.FoldCoverage`: one status instance, as `make run`
starts it), no other instance changes the view, so the nudges alone move every stream and the
tick slows to a safety net every COVERED_POLL_S; a newly opened stream is read at once, and any
move of the fold's partitions brings a full tick at once. Measured on the burst of
`make bench` with 2,000 open streams, the tick of every stream ten times a second was most of
the status process's work and a third of PostgreSQL's. A stream costs
no database connection while it waits, and holds one status (the latest: a slow reader skips
intermediate ones, never queues them), so memory per stream is bounded; the query is one per
tick however many streams are open. The view is shared by every status instance, so any
instance can serve any job's stream.

A stream sends an intermediate status at most every STATUS_STREAM_MIN_GAP_S (the latest one
when the gap is over; the final status at once): in a burst a job's counts change with nearly
every fold batch, ~15 times for a ten-image job, and each event is a write to the client's
socket, which was a third of the status process's work with 2,000 streams open. The status
body is built only for what is sent.

Events carry the whole status (the JSON of `GET /api/status/{id}`), so a client that missed
some has lost nothing; each event's id says what it showed (`domain.progress_id`), and a
client resuming with `Last-Event-ID` is sent the current status only if it differs. One that
already has the final status is answered 204 (Server-Sent Events' "do not reconnect").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prometheus_client import Gauge

from services.status.domain import Caller, FoldCoverage, RetryShortly, progress_id
from services.status.handlers.jobs import JobReader, full_status, status_body
from services.status.ports import ManyJobReads
from shared.api import JobStatus
from shared.events import FINAL_STATUSES
from shared.waits import woken_within

log = logging.getLogger(__name__)
OPEN_STREAMS = Gauge("imagejobs_status_open_streams", "Progress streams open on this status process")
QUERY_CHUNK = 5000  # ids per view query: one tick of a very busy process is a few queries
COVERED_POLL_S = 2.0  # the tick while this fold holds every partition: only a safety net


class Offered:
    """A job's status as the hub read it, its body built once, when a stream first sends it."""

    __slots__ = ("_row", "_errors", "_status", "final")

    def __init__(self, row: Any = None, errors: Any = None, status: JobStatus | None = None) -> None:
        self._row, self._errors, self._status = row, errors, status
        self.final = (status.status if status is not None else row.status) in FINAL_STATUSES

    def status(self) -> JobStatus:
        if self._status is None:
            self._status = full_status(self._row, self._errors)
        return self._status


@dataclass(eq=False)
class Watch:
    """One stream's mailbox: the latest status of its job and a flag that it changed. While the
    stream waits out its gap (`hold_until`), intermediate statuses only replace `latest`; a
    timer wakes the stream when the gap ends, and a final status wakes it at once. A timer, not
    `asyncio.wait_for`: that made a task per gap, 17% of the status process's work with 2,000
    streams open in `make bench`'s burst. The heartbeat is a timer too (`beat_every`): it wakes
    the stream with `ping_due` set, and the one coroutine that serves the stream sends it."""

    job_id: UUID
    latest: Offered | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False  # the stream is to end now (the client left, or the server drains)
    ping_due: bool = False
    _gap: asyncio.TimerHandle | None = None  # the stream waits out its gap until this fires
    _held: bool = False  # an intermediate status came during the gap
    _beat: asyncio.TimerHandle | None = None
    _beat_every_s: float = 0.0

    def offer(self, status: Offered) -> None:
        self.latest = status
        if self._gap is not None and not status.final:
            self._held = True
        else:
            self.changed.set()

    def hold_until(self, when: float) -> None:
        """Intermediate statuses offered from now until `when` (the loop's clock) wait for it."""
        if self.latest is not None and self.latest.final:
            return  # offered while the previous event was being sent: it goes at once
        self._held = self.changed.is_set()
        self.changed.clear()
        self._gap = asyncio.get_running_loop().call_at(when, self._gap_over)

    def _gap_over(self) -> None:
        self._gap = None
        if self._held:
            self._held = False
            self.changed.set()

    @property
    def may_send(self) -> bool:
        """Not inside a gap, or the final status is here (it never waits for one)."""
        return self._gap is None or (self.latest is not None and self.latest.final)

    def beat_every(self, seconds: float) -> None:
        """Wake the stream with `ping_due` every `seconds` until `end_timers`."""
        self._beat_every_s = seconds
        self._beat = asyncio.get_running_loop().call_later(seconds, self._beat_now)

    def _beat_now(self) -> None:  # a method, not a closure: one calling itself is a reference cycle
        self.ping_due = True
        self.changed.set()
        self._beat = asyncio.get_running_loop().call_later(self._beat_every_s, self._beat_now)

    def close(self) -> None:
        self.closed = True
        self.changed.set()

    def end_gap(self) -> None:
        if self._gap is not None:
            self._gap.cancel()
            self._gap = None

    def end_timers(self) -> None:
        self.end_gap()
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None


class ProgressHub:
    def __init__(self, reads: ManyJobReads, every_s: float, max_streams: int,
                 coverage: FoldCoverage | None = None) -> None:
        self._reads, self._every_s, self.max_streams = reads, every_s, max_streams
        self._coverage = coverage or FoldCoverage()
        self._tick_now = False  # the fold's partitions moved: read every watched job at once
        self._watches: dict[UUID, set[Watch]] = {}
        self._seen: dict[UUID, tuple[Any, ...]] = {}  # job -> what its watchers were last offered
        self.open_streams = 0
        self.draining = False  # the server is shutting down: streams end, none opens
        self._wakeup = asyncio.Event()
        self._nudged: set[UUID] = set()  # watched jobs this process's fold just changed
        self._nudge = asyncio.Event()

    @property
    def full(self) -> bool:
        return self.open_streams >= self.max_streams

    def drain(self) -> None:
        """End every open stream cleanly now (a complete response: the client resumes with
        Last-Event-ID on another instance or the restarted one), and open no more. Called when
        the server starts shutting down, before it waits for its connections to close."""
        self.draining = True
        for watchers in self._watches.values():
            for watch in watchers:
                watch.close()

    def subscribe(self, job_id: UUID) -> Watch:
        watch = Watch(job_id, closed=self.draining)
        self._watches.setdefault(job_id, set()).add(watch)
        self.open_streams += 1
        OPEN_STREAMS.inc()
        self._seen.pop(job_id, None)  # the next read of it offers the newcomer the job's current status
        # read it at once: a fold between the stream's first read and now was not nudged to it
        self._nudged.add(job_id)
        self._nudge.set()
        self._wakeup.set()
        return watch

    def unsubscribe(self, watch: Watch) -> None:
        self.open_streams -= 1
        OPEN_STREAMS.dec()
        watchers = self._watches[watch.job_id]
        watchers.discard(watch)
        if not watchers:
            del self._watches[watch.job_id]
            self._seen.pop(watch.job_id, None)

    def nudge(self, job_ids: Iterable[UUID]) -> None:
        """This process's fold just committed changes to `job_ids`: their watchers are told at
        once (a read of those jobs only) instead of at the next poll. The poll stays, for the
        jobs other status instances fold. With no stream open, `job_ids` is not even read."""
        if not self._watches:
            return
        touched = {job_id for job_id in job_ids if job_id in self._watches}
        if touched:
            self._nudged |= touched
            self._nudge.set()

    def moved(self) -> None:
        """The fold's partitions moved (a rebalance): what other instances folded meanwhile
        was not nudged here, so every watched job is read at once."""
        self._tick_now = True
        self._nudge.set()

    @property
    def poll_every_s(self) -> float:
        """How often every watched job is read: often only while other instances fold some."""
        return max(self._every_s, COVERED_POLL_S) if self._coverage.complete else self._every_s

    async def run(self) -> None:
        """Poll while anyone watches, and read nudged jobs between polls; a failed read is
        logged and tried again on the next."""
        next_poll = 0.0
        loop = asyncio.get_running_loop()
        while True:
            if not self._watches:
                self._wakeup.clear()
                await self._wakeup.wait()
            try:
                if self._tick_now or loop.time() >= next_poll:
                    next_poll, self._tick_now = loop.time() + self.poll_every_s, False
                    self._nudged.clear()
                    await self.tick()
                elif self._nudged:
                    nudged, self._nudged = self._nudged, set()
                    await self.tick(list(nudged))
            except Exception as exc:  # noqa: BLE001 - the view is briefly unreachable: next tick
                log.warning("reading the watched jobs failed (%s); retrying", exc)
                next_poll = min(next_poll, loop.time() + self._every_s)  # what a nudge lost, soon
            self._nudge.clear()
            if not self._nudged and not self._tick_now:
                await woken_within(self._nudge, next_poll - loop.time())

    async def tick(self, only: list[UUID] | None = None) -> None:
        ids = list(self._watches) if only is None else [j for j in only if j in self._watches]
        for start in range(0, len(ids), QUERY_CHUNK):
            for row, errors in await self._reads.load_jobs(ids[start:start + QUERY_CHUNK]):
                seen = (row.status, row.succeeded, row.failed, row.started, row.total, row.scheduled_time)
                if self._seen.get(row.job_id) == seen or row.job_id not in self._watches:
                    continue
                self._seen[row.job_id] = seen
                offered = Offered(row, errors)
                for watch in self._watches[row.job_id]:
                    watch.offer(offered)


HEARTBEAT = None  # what `Opened.events` yields when a heartbeat is due


class Opened:
    """A stream to serve: `events` yields (id, status) pairs, the final one last, and, when
    `heartbeat_s` is set, HEARTBEAT every `heartbeat_s` (a comment line to send, so proxies keep
    an idle stream open); `close()` ends it early and cleanly (the client left, or the server
    is shutting down: the client reconnects elsewhere)."""

    def __init__(self, hub: ProgressHub, job_id: UUID, current: JobStatus, last_sent: str | None,
                 min_gap_s: float = 0.0, heartbeat_s: float | None = None) -> None:
        self._hub, self._job_id, self._current, self._last_sent = hub, job_id, current, last_sent
        self._min_gap_s, self._heartbeat_s = min_gap_s, heartbeat_s
        self._watch: Watch | None = None
        self._closed = False
        self.events = self._follow()

    def close(self) -> None:
        self._closed = True  # before the stream starts: it ends as soon as it has subscribed
        if self._watch is not None:
            self._watch.close()

    async def _follow(self) -> AsyncIterator[tuple[str, JobStatus] | None]:
        """The status now (unless the client has it), then each change, until final. The
        subscription is made here, when the response starts: a client gone before that holds
        nothing."""
        self._watch = watch = self._hub.subscribe(self._job_id)
        if self._closed:
            watch.close()
        watch.offer(Offered(status=self._current))
        if self._heartbeat_s:
            watch.beat_every(self._heartbeat_s)
        last_sent, loop = self._last_sent, asyncio.get_running_loop()
        try:
            while not watch.closed:
                await watch.changed.wait()
                watch.changed.clear()
                offered = watch.latest
                if watch.closed or offered is None:
                    return
                if watch.ping_due:
                    watch.ping_due = False
                    yield HEARTBEAT
                    if watch.closed:
                        return
                    if not watch.may_send:
                        continue  # woken inside a gap: what came stays held until it ends
                    offered = watch.latest or offered  # what came while the heartbeat was sent
                status = offered.status()
                event_id = progress_id(status)
                if event_id != last_sent:  # also what a heartbeat's wake-up finds unchanged
                    last_sent = event_id
                    yield event_id, status
                    if self._min_gap_s > 0:
                        watch.hold_until(loop.time() + self._min_gap_s)
                if offered.final:
                    return
        finally:
            watch.end_timers()
            self._hub.unsubscribe(watch)


class JobProgress:
    """The use case: check the caller may see the job (the same 400/401/404/503 as a status
    read), then follow it through the hub."""

    def __init__(self, reader: JobReader, reads: ManyJobReads, hub: ProgressHub, min_gap_s: float = 0.0,
                 heartbeat_s: float | None = None) -> None:
        self._reader, self._reads, self._hub, self._min_gap_s = reader, reads, hub, min_gap_s
        self._heartbeat_s = heartbeat_s

    async def open(self, raw_id: str, caller: Caller, last_event_id: str | None) -> Opened | None:
        """The stream to serve, or None when the client has the final status already (nothing
        more will come); RetryShortly when STATUS_MAX_STREAMS are open."""
        found = await self._reader.find(raw_id, caller)
        if self._hub.draining:
            raise RetryShortly("this status process is shutting down; retry shortly")
        if self._hub.full:
            raise RetryShortly(f"{self._hub.max_streams} progress streams are open on this process"
                               " (STATUS_MAX_STREAMS); retry shortly")
        loaded = await self._reads.load_jobs([found.job_id])
        current = full_status(*loaded[0]) if loaded else status_body(found)
        if current.status in FINAL_STATUSES and progress_id(current) == last_event_id:
            return None
        return Opened(self._hub, found.job_id, current, last_event_id, self._min_gap_s, self._heartbeat_s)
