"""The process shape of a background worker (scheduler, processor): connections, the worker's
loops, its retention loop (shared/retention.py), and the operational endpoints, started and
stopped in that order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from fastapi import FastAPI

from shared.http import new_app
from shared.ops import ops_router
from shared.retention import Expiry, start_retention
from shared.runtime import Runtime, bounded
from shared.settings import CommonSettings


class Worker(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def details(self) -> dict[str, object]: ...


def worker_app(service: str, settings: CommonSettings, make_worker: Callable[[Runtime], Worker],
               stop_within_s: float, expiries: Callable[[Runtime], Sequence[Expiry]] = lambda _: ()) -> FastAPI:
    """`expiries`: what the service forgets of its own tables, run by its retention loop."""
    runtime = Runtime(settings, service)
    worker = make_worker(runtime)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        await worker.start()
        retention = start_retention(runtime, expiries(runtime))
        yield
        retention.cancel()
        await bounded(worker.stop(), stop_within_s, f"stopping the {service}")
        await bounded(runtime.stop(), 10, "closing connections")

    app = new_app(f"imagejobs {service}", lifespan)
    app.include_router(ops_router(runtime, details=worker.details))
    return app
