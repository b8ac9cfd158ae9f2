"""Run a service's FastAPI app with uvicorn: SIGTERM drains, then the lifespan closes connections."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from shared.logging import configure_logging
from shared.settings import CommonSettings


def serve(app: FastAPI, settings: CommonSettings, port: int) -> None:
    configure_logging(settings.log_level, settings.log_json)
    uvicorn.run(app, host=settings.http_host, port=port, log_config=None,
                timeout_graceful_shutdown=15, access_log=False)
