"""The scheduler process: the worker plus the operational endpoints."""

from __future__ import annotations

from fastapi import FastAPI

from services.scheduler.bootstrap import build, expiries
from services.scheduler.settings import SchedulerSettings
from shared.worker_app import worker_app


def create_app(settings: SchedulerSettings) -> FastAPI:
    return worker_app("scheduler", settings, lambda runtime: build(settings, runtime), stop_within_s=15,
                      expiries=lambda runtime: expiries(settings, runtime))
