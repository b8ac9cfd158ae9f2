"""The scheduler process: the worker plus the operational endpoints."""

from __future__ import annotations

from fastapi import FastAPI

from services.scheduler.handlers.jobs import SchedulerWorker
from services.scheduler.settings import SchedulerSettings
from shared.worker_app import worker_app


def create_app(settings: SchedulerSettings) -> FastAPI:
    return worker_app("scheduler", settings, lambda runtime: SchedulerWorker(settings, runtime), stop_within_s=15)
