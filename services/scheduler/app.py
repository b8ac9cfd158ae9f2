"""The scheduler process: the worker plus the operational endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.scheduler.settings import SchedulerSettings
from services.scheduler.worker import SchedulerWorker
from shared.http import install_error_handlers
from shared.runtime import Runtime, bounded, ops_router


def create_app(settings: SchedulerSettings) -> FastAPI:
    runtime = Runtime(settings, "scheduler")
    worker = SchedulerWorker(settings, runtime)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        await worker.start()
        yield
        await bounded(worker.stop(), 15, "stopping the scheduler")
        await bounded(runtime.stop(), 10, "closing connections")

    app = FastAPI(title="imagejobs scheduler", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(ops_router(runtime, details=worker.details))
    return app
