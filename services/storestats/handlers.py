"""The store statistics use case: count a batch of results records into per-store windows.

`StoreCounter.write_batch` counts the outcomes in the store (each task once, ever), publishes
the windows they count in and returns only once the broker has acknowledged them; the stream
(adapters/stream.py) acks the records only then, so a kill at any point leaves the unfinished
records to be delivered again, and counting them again changes nothing: the counts are exact,
and the latest record per (store, window) is the window's total. Records that are not events
and outcomes the store refuses for good go to the DLQ; the rest is counted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from prometheus_client import Counter

from services.storestats.domain import CountedImage, StoreTotals, WindowStats, parse_outcome, published_record
from services.storestats.ports import DeadLetters, Received, StatsStore, WindowPublisher
from shared.retry import PermanentFailure, isolating, retry_record_work

SKIPPED = Counter("imagejobs_storestats_skipped_total", "Results records not counted", ["why"])
COUNTED = Counter("imagejobs_storestats_outcomes_total", "Outcomes counted into a window (repeats included)")
R = TypeVar("R", bound=Received)


def outcomes_of(records: Sequence[R]) -> tuple[list[tuple[R, CountedImage]], list[tuple[R, str]]]:
    """(record, image) of the outcomes, and (record, reason) of the records that are not events
    at all (poison: dead-lettered, never retried for ever); other event types are skipped."""
    out, poison = [], []
    for record in records:
        try:
            image = parse_outcome(record.value)
        except ValueError as exc:
            SKIPPED.labels("undecodable").inc()
            poison.append((record, f"undecodable: {exc}"))
            continue
        if image is None:
            SKIPPED.labels("not an outcome").inc()
        else:
            out.append((record, image))
    return out, poison


class StoreCounter(Generic[R]):
    def __init__(self, store: StatsStore, publisher: WindowPublisher, dead_letters: DeadLetters[R],
                 totals: dict[str, StoreTotals], window_s: int) -> None:
        self.store = store
        self.publisher = publisher
        self.dead_letters = dead_letters
        self.totals = totals  # what /metrics exports: refreshed for the stores of each batch
        self.window_s = window_s

    async def write_batch(self, records: Sequence[R]) -> None:
        """Count the batch, publish its windows and wait for the acks; refresh the stores' totals."""
        counted, poison = outcomes_of(records)
        for record, reason in poison:
            await self.dead_letters.dead_letter(record, reason)
        windows = await self._count_isolating(counted)
        images = [image for _, image in counted]
        if not images:
            return
        await self.publisher.publish([published_record(window, self.window_s) for window in windows])
        stores = sorted({image.store_id for image in images})
        self.totals.update(await retry_record_work("reading store totals", lambda: self.store.totals(stores)))
        COUNTED.inc(len(images))

    async def _count_isolating(self, counted: list[tuple[R, CountedImage]]) -> list[WindowStats]:
        """Count the images; a batch the store refuses for good is split in halves until the
        refused image is alone, which is dead-lettered (the rest is counted)."""
        if not counted:
            return []
        images = [image for _, image in counted]
        try:
            return await retry_record_work("counting store statistics",
                                           lambda: self.store.count(images, self.window_s))
        except PermanentFailure as failure:
            if len(counted) == 1:
                await self.dead_letters.dead_letter(counted[0][0], f"refused: {failure}")
                return []
            token = isolating.set(True)
            try:
                middle = len(counted) // 2
                return [*await self._count_isolating(counted[:middle]),
                        *await self._count_isolating(counted[middle:])]
            finally:
                isolating.reset(token)
