"""The processor's composition root: the only module that builds its adapters and hands them
to the use cases (handlers/) as their ports."""

from __future__ import annotations

import asyncio
import random

from services.processor.adapters.cache import DimensionCache
from services.processor.adapters.fetch import Fetcher, FetchLimits
from services.processor.adapters.results import EXPIRE_RESULTS, Recorder
from services.processor.adapters.stores import StoreDirectory
from services.processor.domain import parse_gpu_delay, parse_image_formats
from services.processor.handlers.process import Deps
from services.processor.handlers.tasks import ProcessorWorker
from services.processor.settings import ProcessorSettings
from shared.retention import Expiry, statement_expiry
from shared.runtime import Runtime


def build(settings: ProcessorSettings, runtime: Runtime) -> ProcessorWorker:
    """The worker with its adapters: image downloads, the dimension cache, the store master,
    the result recorder; `/readyz` checks that the store master is imported."""
    s = settings
    fetcher = Fetcher(FetchLimits(
        s.image_max_bytes, s.image_connect_timeout_s, s.image_total_timeout_s,
        s.image_max_redirects, s.image_attempts, s.image_retry_base_s,
        s.image_allow_private_networks))
    stores = StoreDirectory(runtime)
    runtime.add_check("store_master", stores.loaded)
    deps = Deps(fetcher, DimensionCache(s.image_cache_ttl_s, s.image_cache_size), stores,
                parse_gpu_delay(s.processor_gpu_delay_ms), s.image_max_pixels, random.Random(),
                asyncio.Semaphore(s.processor_concurrency),
                parse_image_formats(s.image_formats))  # an unknown name stops the start here
    recorder = Recorder(runtime, s.topics.results, busy_gather_s=s.busy_batch_wait_ms / 1000)
    return ProcessorWorker(settings, runtime, deps, recorder, edges=(fetcher, recorder))


def expiries(settings: ProcessorSettings, runtime: Runtime) -> list[Expiry]:
    """Retention: result rows are kept the slack beyond the status view's retention of their
    jobs (final after them)."""
    older_than_s = settings.job_retention_s + settings.retention_slack_s
    return [statement_expiry(runtime, "processor_results", EXPIRE_RESULTS, older_than_s)]
