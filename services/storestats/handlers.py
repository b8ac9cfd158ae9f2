"""The two agents.

`forward` acknowledges an event by hand (`stream.noack()`), only once the broker has the record
it forwarded, so a committed offset never has a forwarded outcome in flight: a kill loses none
(it may forward some twice; `count` skips repeats by task id).

`count` publishes a window's new totals after each outcome, without waiting. What a kill can
lose there is repaired at start: after the tables are recovered and before counting anything,
every window in the table is published again, so the latest record per key is the table's."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

from faust.types import EventT, StreamT
from prometheus_client import Counter

from services.storestats.app import StatsApp
from services.storestats.domain import (
    StoreTotals,
    WindowStats,
    fold_totals,
    fold_window,
    parse_outcome,
    published_record,
)

log = logging.getLogger(__name__)
SKIPPED = Counter("imagejobs_storestats_skipped_total", "Results records not counted", ["why"])
COUNTED = Counter("imagejobs_storestats_outcomes_total", "Outcomes counted into a window")


def ack_when_sent(event: EventT | None) -> Callable[[asyncio.Future[Any]], None]:
    """A done-callback for a send: ack `event` (if any) once the broker has the record. A failed
    send leaves it unacked (its offset is never committed) and stops the process, so the
    supervisor restarts it and the event is processed (or the window republished) again."""
    def done(sent: asyncio.Future[Any]) -> None:
        if sent.cancelled() or sent.exception() is not None:
            log.error("a send failed (%r); stopping so that a restart processes the event again",
                      None if sent.cancelled() else sent.exception())
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if event is not None:
            event.ack()
    return done


async def send(stats: StatsApp, topic: str, key: bytes, value: bytes, event: EventT | None = None) -> None:
    """Send through the app's plain (not transactional) producer; ack `event` when acknowledged.
    (faust's transactional sends go by the destination partition's producer, whose transaction
    commits only when that partition's own offsets move: a record re-keyed to a quiet partition
    stayed invisible until the transaction timed out and the worker crashed, measured.)"""
    sent = await stats.app.producer.send(topic, key, value, None, None, None)
    sent.add_done_callback(ack_when_sent(event))


def add_agents(stats: StatsApp) -> None:
    app = stats.app

    @app.agent(stats.results, name="forward")
    async def forward(stream: StreamT) -> None:
        """Every outcome of the results topic, re-keyed by store (other events are skipped)."""
        async for event in stream.noack().events():
            try:
                outcome = parse_outcome(event.value)
            except ValueError:
                outcome = None
                SKIPPED.labels("undecodable").inc()
            if outcome is None:
                event.ack()
                continue
            await send(stats, stats.by_store.get_topic_name(), outcome.store_id.encode(), event.value, event)

    @app.agent(stats.by_store, name="count")
    async def count(stream: StreamT) -> None:
        """Count each task's first outcome into its store's window; publish the window."""
        await app.tables.recovery.completed.wait()
        log.info("republished %d windows from the recovered table", await republish(stats))
        async for event in stream.events():
            async with stats.gate.lock:  # no commit while the tables change (adapters/faust_commit.py)
                record = count_outcome(stats, event.value)
            if record is not None:
                await send(stats, stats.settings.stats_topic, *record)


async def republish(stats: StatsApp) -> int:
    """Publish every window the table holds, as it is now (before any event is counted)."""
    size, windows = stats.settings.storestats_window_s, list(stats.windows.table.data.values())
    for value in windows:
        await send(stats, stats.settings.stats_topic, *published_record(WindowStats.from_json(value), size))
    return len(windows)


def count_outcome(stats: StatsApp, raw: bytes) -> tuple[bytes, bytes] | None:
    """Fold the current event's outcome into the tables; the record to publish, or None for a
    repeat of a task already counted."""
    outcome = parse_outcome(raw)
    assert outcome is not None, "forward sends only outcomes"
    # Reads use `.value()` or an explicit window: faust's `.current()` and `.delta()` use the
    # record's Kafka timestamp whatever `relative_to` says, so a record forwarded again after a
    # restart (a later timestamp, the same occurred_at) read one window and wrote another.
    seen, dedup_s = stats.seen[outcome.task_id], stats.settings.storestats_dedup_s
    earlier = stats.seen.table.window.current(outcome.occurred_at.timestamp() - dedup_s)
    if seen.value() or seen[earlier]:  # this period or the one before
        SKIPPED.labels("repeat").inc()
        return None
    stats.seen[outcome.task_id] = 1
    size = stats.settings.storestats_window_s
    before = stats.windows[outcome.store_id].value()
    window = fold_window(WindowStats.from_json(before) if before else None, outcome, size)
    stats.windows[outcome.store_id] = window.to_json()
    totals = StoreTotals.from_json(stats.totals.get(outcome.store_id))
    stats.totals[outcome.store_id] = fold_totals(totals, outcome, window).to_json()
    COUNTED.inc()
    return published_record(window, size)
