"""The processor process: the worker plus the operational endpoints."""

from __future__ import annotations

from fastapi import FastAPI

from services.processor.bootstrap import build, expiries
from services.processor.handlers.tasks import DRAIN_TIMEOUT_S
from services.processor.settings import ProcessorSettings
from shared.worker_app import worker_app


def create_app(settings: ProcessorSettings) -> FastAPI:
    # stop() drains in-flight tasks for up to DRAIN_TIMEOUT_S, then commits and leaves the group
    return worker_app("processor", settings, lambda runtime: build(settings, runtime),
                      stop_within_s=DRAIN_TIMEOUT_S + 10,
                      expiries=lambda runtime: expiries(settings, runtime))
