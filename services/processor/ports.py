"""What the processor's use cases need from the outside world (implemented in adapters/,
handed over by bootstrap.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from services.processor.domain import Size
from shared.events import ImageOutcome, ImageTask


class StoreMaster(Protocol):
    async def exists(self, store_id: str) -> bool:
        """The store is in the store master; raises StoreMasterNotLoaded before its first import."""


class ImageSource(Protocol):
    async def fetch(self, url: str) -> bytes:
        """The image's bytes; raises ImageError with the reason."""


class DimensionCache(Protocol):
    async def get_or_load(self, url: str, load: Callable[[], Awaitable[Size]]) -> Size:
        """The image's size, measured (`load`) once per URL while it is remembered."""


class ResultRecorder(Protocol):
    async def record(self, outcome: ImageOutcome) -> ImageOutcome:
        """Record and publish `outcome` once; the outcome that is recorded (maybe an earlier one)."""

    async def recorded(self, tasks: list[ImageTask]) -> dict[str, ImageOutcome]:
        """task_id -> the outcome already recorded, for those of `tasks` that have one."""


class Edge(Protocol):
    """An adapter with a connection or a background task to start before use and close after."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...
