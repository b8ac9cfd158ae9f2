"""The processor process: the worker plus the operational endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.processor.settings import ProcessorSettings
from services.processor.worker import ProcessorWorker
from shared.http import install_error_handlers
from shared.runtime import Runtime, bounded, ops_router


def create_app(settings: ProcessorSettings) -> FastAPI:
    runtime = Runtime(settings, "processor")
    worker = ProcessorWorker(settings, runtime)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        await worker.start()
        yield
        await bounded(worker.stop(), 40, "draining in-flight tasks")
        await bounded(runtime.stop(), 10, "closing connections")

    app = FastAPI(title="imagejobs processor", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(ops_router(runtime, details=worker.details))
    return app
