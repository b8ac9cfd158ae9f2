"""What the store statistics use case (handlers.py) needs from the outside world (implemented
in adapters/, handed over by bootstrap.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from services.storestats.domain import CountedImage, StoreTotals, WindowStats


class Received(Protocol):
    """A record read from the results topic."""

    @property
    def value(self) -> Any: ...


R_contra = TypeVar("R_contra", bound=Received, contravariant=True)


class StatsStore(Protocol):
    async def count(self, images: Sequence[CountedImage], window_s: int) -> list[WindowStats]:
        """Count each task once, ever; the windows the images count in, as they are now."""

    async def totals(self, stores: Sequence[str] | None = None) -> dict[str, StoreTotals]:
        """Each store's counters and latest mean perimeter (all stores when `stores` is None)."""


class WindowPublisher(Protocol):
    async def publish(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Publish (key, value) records to the store statistics topic; returns once all are acked."""


class DeadLetters(Protocol[R_contra]):
    async def dead_letter(self, record: R_contra, reason: str) -> None:
        """The record, whole, to the DLQ (never raises: a record that cannot go is logged)."""
