"""In-memory fakes of the processor's ports (services/processor/ports.py)."""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import Awaitable, Callable

from PIL import Image

from services.processor.domain import ImageError, Size
from services.processor.handlers.process import Deps
from services.processor.ports import ImageSource, StoreMaster


class Stores:
    """A store master holding S1 only."""

    async def exists(self, store_id: str) -> bool:
        return store_id == "S1"


class Images:
    """An image source: a 30x20 PNG at every URL but those ending in missing.png (404)."""

    def __init__(self) -> None:
        self.fetched: list[str] = []

    async def fetch(self, url: str) -> bytes:
        self.fetched.append(url)
        if url.endswith("missing.png"):
            raise ImageError("HTTP 404 from the image server")
        out = io.BytesIO()
        Image.new("RGB", (30, 20)).save(out, "PNG")
        return out.getvalue()


class NoImages:
    """An image source a test expects never to be asked."""

    async def fetch(self, url: str) -> bytes:
        raise AssertionError(f"{url} was downloaded")


class Sizes:
    """A dimension cache that never forgets."""

    def __init__(self) -> None:
        self.sizes: dict[str, Size] = {}

    async def get_or_load(self, url: str, load: Callable[[], Awaitable[Size]]) -> Size:
        if url not in self.sizes:
            self.sizes[url] = await load()
        return self.sizes[url]


def deps_for(images: ImageSource, stores: StoreMaster | None = None, gpu_s: float = 0.0,
             gpu_slots: int = 1) -> Deps:
    return Deps(fetcher=images, cache=Sizes(), stores=stores or Stores(), gpu_bounds=(gpu_s, gpu_s),
                max_pixels=10**8, rng=random.Random(1), gpu_slots=asyncio.Semaphore(gpu_slots))
