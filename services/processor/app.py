"""The processor process: the worker plus the operational endpoints."""

from __future__ import annotations

from fastapi import FastAPI

from services.processor.adapters.results import EXPIRE_RESULTS
from services.processor.handlers.tasks import DRAIN_TIMEOUT_S, ProcessorWorker
from services.processor.settings import ProcessorSettings
from shared.retention import statement_expiry
from shared.worker_app import worker_app


def create_app(settings: ProcessorSettings) -> FastAPI:
    # results are kept the slack beyond the view's retention of their jobs (final after them)
    older_than_s = settings.job_retention_s + settings.retention_slack_s
    # stop() drains in-flight tasks for up to DRAIN_TIMEOUT_S, then commits and leaves the group
    return worker_app("processor", settings, lambda runtime: ProcessorWorker(settings, runtime),
                      stop_within_s=DRAIN_TIMEOUT_S + 10,
                      expiries=lambda runtime: [statement_expiry(runtime, "processor_results", EXPIRE_RESULTS,
                                                                 older_than_s)])
