"""Processing one `ImageTask`: the only place that orchestrates store check, download,
measurement, simulated GPU time, the idempotent result row and the outcome event."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

from prometheus_client import Counter

from services.processor.cache import DimensionCache
from services.processor.domain import ImageError, Size, gpu_delay, measure
from services.processor.fetch import Fetcher
from services.processor.results import ResultWriter, as_recorded
from services.processor.stores import StoreDirectory
from shared.events import ImageFailed, ImageSucceeded, ImageTask
from shared.metrics import latency_histogram
from shared.runtime import Runtime

log = logging.getLogger(__name__)
OUTCOMES = Counter("imagejobs_processor_images_total", "Images processed", ["outcome"])
FAILURES = Counter("imagejobs_processor_failures_total", "Image failures by reason", ["reason"])
PROCESS_LATENCY = latency_histogram("imagejobs_processor_task_seconds", "Task processing time")

Outcome = ImageSucceeded | ImageFailed


@dataclass
class Deps:
    runtime: Runtime
    fetcher: Fetcher
    cache: DimensionCache
    stores: StoreDirectory
    gpu_bounds: tuple[float, float]
    max_pixels: int
    rng: random.Random
    writer: ResultWriter


async def process(task: ImageTask, deps: Deps) -> Outcome:
    """The task's outcome, recorded once: a repeat returns the recorded outcome unchanged."""
    started = time.perf_counter()
    existing = await recorded_outcome(task, deps)
    if existing is not None:
        return existing
    try:
        if not await deps.stores.exists(task.store_id):
            raise ImageError("store not found")
        size = await deps.cache.get_or_load(task.image_url, lambda: _download_and_measure(task, deps))
        await asyncio.sleep(gpu_delay(deps.gpu_bounds, deps.rng))
        outcome: Outcome = _succeeded(task, size)
    except ImageError as exc:
        outcome = _failed(task, str(exc))
        FAILURES.labels(str(exc).split(":")[0][:40]).inc()
    except (OSError, ValueError, RuntimeError, TypeError) as exc:  # fail the image, never block the partition
        log.exception("unexpected error processing %s", task.task_id)
        outcome = _failed(task, f"processing error: {type(exc).__name__}")
        FAILURES.labels("processing error").inc()
    recorded = await record(outcome, deps)
    OUTCOMES.labels("succeeded" if isinstance(recorded, ImageSucceeded) else "failed").inc()
    PROCESS_LATENCY.observe(time.perf_counter() - started)
    return recorded


async def _download_and_measure(task: ImageTask, deps: Deps) -> Size:
    data = await deps.fetcher.fetch(task.image_url)
    return await asyncio.to_thread(measure, data, deps.max_pixels)


def _common(task: ImageTask) -> dict[str, object]:
    return {"job_id": task.job_id, "task_id": task.task_id, "visit_index": task.visit_index,
            "image_index": task.image_index, "store_id": task.store_id, "image_url": task.image_url}


def _succeeded(task: ImageTask, size: Size) -> ImageSucceeded:
    return ImageSucceeded(**_common(task), width=size.width, height=size.height,  # type: ignore[arg-type]
                          perimeter=size.perimeter)


def _failed(task: ImageTask, reason: str) -> ImageFailed:
    return ImageFailed(**_common(task), reason=reason)  # type: ignore[arg-type]


async def recorded_outcome(task: ImageTask, deps: Deps) -> Outcome | None:
    async with deps.runtime.pool.connection() as conn:
        row = await (await conn.execute(
            "SELECT width, height, error FROM processor_results WHERE task_id = %s", (task.task_id,)
        )).fetchone()
    if row is None:
        return None
    return as_recorded(_failed(task, ""), *row)


async def record(outcome: Outcome, deps: Deps) -> Outcome:
    """Insert the result row once (unique task_id); a duplicate gets the first row's outcome."""
    return await deps.writer.record(outcome)
