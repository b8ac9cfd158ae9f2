"""In-memory fakes of the store statistics ports (services/storestats/ports.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from services.storestats.domain import CountedImage, StoreTotals, WindowStats, fold_window, window_start


@dataclass(frozen=True)
class Record:
    """A record of the results topic."""

    value: bytes


class Refused(Exception):
    """What a database refusing a value for good raises (not an infrastructure error)."""


class Store:
    """Counts each task once, ever; refuses for good any batch holding a task of `refuses`."""

    def __init__(self, refuses: frozenset[str] = frozenset()) -> None:
        self.refuses = refuses
        self.counted: dict[str, CountedImage] = {}
        self.windows: dict[tuple[str, float], WindowStats] = {}

    async def count(self, images: Sequence[CountedImage], window_s: int) -> list[WindowStats]:
        if any(image.task_id in self.refuses for image in images):
            raise Refused("value out of range")
        touched = []
        for image in images:
            key = (image.store_id, window_start(image.occurred_at, window_s))
            if image.task_id not in self.counted:
                self.counted[image.task_id] = image
                self.windows[key] = fold_window(self.windows.get(key), image, window_s)
            touched.append(key)
        return [self.windows[key] for key in dict.fromkeys(touched)]

    async def totals(self, stores: Sequence[str] | None = None) -> dict[str, StoreTotals]:
        out: dict[str, StoreTotals] = {}
        for image in self.counted.values():
            if stores is not None and image.store_id not in stores:
                continue
            was = out.get(image.store_id, StoreTotals())
            if image.reason is None:
                out[image.store_id] = replace(was, succeeded=was.succeeded + 1)
            else:
                failed = {**was.failed, image.reason: was.failed.get(image.reason, 0) + 1}
                out[image.store_id] = replace(was, failed=failed)
        return out


class Topic:
    """The store statistics topic: what was published, in order."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []

    async def publish(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        self.records.extend(records)


class DeadLetters:
    def __init__(self) -> None:
        self.records: list[tuple[Record, str]] = []

    async def dead_letter(self, record: Record, reason: str) -> None:
        self.records.append((record, reason))
