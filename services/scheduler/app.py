"""The scheduler process: the worker plus the operational endpoints."""

from __future__ import annotations

from fastapi import FastAPI

from services.scheduler.adapters.store import expire_finished
from services.scheduler.handlers.jobs import SchedulerWorker
from services.scheduler.settings import SchedulerSettings
from shared.retention import Expiry
from shared.runtime import Runtime
from shared.worker_app import worker_app


def create_app(settings: SchedulerSettings) -> FastAPI:
    return worker_app("scheduler", settings, lambda runtime: SchedulerWorker(settings, runtime), stop_within_s=15,
                      expiries=lambda runtime: [finished_jobs(runtime, settings)])


def finished_jobs(runtime: Runtime, settings: SchedulerSettings) -> Expiry:
    """Released and cancelled jobs, kept the slack beyond the view's retention of them."""
    older_than_s = settings.job_retention_s + settings.retention_slack_s
    return Expiry("scheduler_jobs", lambda batch: expire_finished(runtime.pool, older_than_s, batch))
