"""Processing one `ImageTask`: the only place that orchestrates store check, download,
measurement and simulated GPU time. Recording the outcome (the idempotent result row and the
outcome event) is the recorder's, in batches (results.py)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from prometheus_client import Counter
from psycopg_pool import PoolTimeout

from services.processor.domain import ImageError, Size, StoreMasterNotLoaded, failure_category, gpu_delay, measure
from services.processor.ports import DimensionCache, ImageSource, StoreMaster
from shared.events import ImageFailed, ImageOutcome, ImageSucceeded, ImageTask, envelope
from shared.metrics import STAGE, latency_histogram

log = logging.getLogger(__name__)
OUTCOMES = Counter("imagejobs_processor_images_total", "Images processed", ["outcome"])
# `reason` is the reason's category (domain.failure_category): a fixed set of label values
FAILURES = Counter("imagejobs_processor_failures_total", "Image failures by reason", ["reason"])
PROCESS_LATENCY = latency_histogram("imagejobs_processor_task_seconds", "Task processing time")

# Below this size Pillow reads the header inline; above it (a PNG is verified chunk by chunk)
# the work moves to a thread so the event loop keeps serving the other tasks.
INLINE_MEASURE_BYTES = 1024 * 1024
# The only errors `process` raises (the caller retries the task): the database is unreachable or
# the store master not imported yet. Anything else fails the image: a retry would fail the same way.
TRANSIENT_INFRASTRUCTURE: tuple[type[Exception], ...] = (StoreMasterNotLoaded, psycopg.OperationalError,
                                                         PoolTimeout)


@dataclass
class Deps:
    """What `process` works with: its ports and its limits."""

    fetcher: ImageSource
    cache: DimensionCache
    stores: StoreMaster
    gpu_bounds: tuple[float, float]
    max_pixels: int
    rng: random.Random
    # the GPU stage's slots: the next images are downloaded and measured while these are busy
    gpu_slots: asyncio.Semaphore
    # the decoders Pillow may run (domain.parse_image_formats(IMAGE_FORMATS); this is its default)
    formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


def _nothing() -> None:
    return None


async def process(task: ImageTask, deps: Deps,
                  measured: Callable[[], None] = _nothing) -> tuple[ImageOutcome, float]:
    """The task's outcome (not yet recorded) and the wall time its image was measured: store
    check, download, measurement, then GPU time in one of `deps.gpu_slots`; `measured()` is
    called once the task holds its GPU slot (the caller then frees its download slot).

    Returns an outcome for every image: a failing image, and any unexpected error (a bug, a
    library failing oddly), becomes an `ImageFailed` with its reason. Raises only the transient
    infrastructure errors in TRANSIENT_INFRASTRUCTURE (and cancellation)."""
    started = time.perf_counter()
    downloaded_at = time.time()
    try:
        if not await deps.stores.exists(task.store_id):
            raise ImageError("store not found")
        size = await deps.cache.get_or_load(task.image_url, lambda: _download_and_measure(task, deps))
        downloaded_at = time.time()
        STAGE["downloaded"].observe(time.perf_counter() - started)
        delay = gpu_delay(deps.gpu_bounds, deps.rng)
        if delay:
            async with deps.gpu_slots:
                # the download slot is handed on only now: at most PROCESSOR_CONCURRENCY measured
                # images wait for the GPU (bounds the drain on rebalance); nothing below raises
                measured()
                await asyncio.sleep(delay)
        else:
            measured()
        outcome: ImageOutcome = _succeeded(task, size)
    except ImageError as exc:
        outcome = failed(task, str(exc))
    except TRANSIENT_INFRASTRUCTURE:
        raise
    except Exception as exc:  # noqa: BLE001 - fail the image, never retry it for ever nor block the partition
        log.exception("unexpected error processing %s", task.task_id)
        outcome = failed(task, f"processing error: {type(exc).__name__}")
    if isinstance(outcome, ImageFailed):
        FAILURES.labels(failure_category(outcome.reason)).inc()
    PROCESS_LATENCY.observe(time.perf_counter() - started)
    return outcome, downloaded_at


async def _download_and_measure(task: ImageTask, deps: Deps) -> Size:
    data = await deps.fetcher.fetch(task.image_url)
    if len(data) <= INLINE_MEASURE_BYTES:
        return measure(data, deps.max_pixels, deps.formats)  # header parse: cheaper than a thread hop
    return await asyncio.to_thread(measure, data, deps.max_pixels, deps.formats)  # PNG verify walks every chunk


def _common(task: ImageTask) -> dict[str, object]:
    return {"job_id": task.job_id, "task_id": task.task_id, "visit_index": task.visit_index,
            "image_index": task.image_index, "store_id": task.store_id, "image_url": task.image_url}


def _succeeded(task: ImageTask, size: Size) -> ImageSucceeded:
    # model_construct: every field comes from a validated task and a measured size
    return ImageSucceeded.model_construct(**envelope(ImageSucceeded), **_common(task), width=size.width,
                                          height=size.height, perimeter=size.perimeter)


def failed(task: ImageTask, reason: str) -> ImageFailed:
    return ImageFailed(job_id=task.job_id, task_id=task.task_id, visit_index=task.visit_index,
                       image_index=task.image_index, store_id=task.store_id, image_url=task.image_url,
                       reason=reason)
