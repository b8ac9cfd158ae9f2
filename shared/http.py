"""HTTP conventions shared by the FastAPI services: every error is `{"error": ...}`, never 422.

`install_error_handlers` maps FastAPI's validation errors to 400 with a message naming the
field, HTTP errors to their code with the same shape, and any unexpected exception to a
logged 500 `{"error": "internal error"}` (so a bug never leaks a stack trace to a client).
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from shared.api import ErrorBody, use_house_openapi
from shared.docs_pages import add_docs_pages

log = logging.getLogger(__name__)


# FastAPI's built-in OpenTelemetry hooks look up the global tracer, meter and logger providers
# on every request (about a tenth of ingest's CPU under load). imagejobs exports Prometheus
# metrics instead, so they are off; an older FastAPI keeps the unknown keyword as an extra.
NO_TELEMETRY = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


def new_app(title: str, lifespan: Any, version: str = "1.0") -> FastAPI:
    """A FastAPI app with the house error handlers, without per-request telemetry, and with
    API docs pages that load nothing from outside the service."""
    app = FastAPI(title=title, version=version, lifespan=lifespan, telemetry=NO_TELEMETRY,
                  docs_url=None, redoc_url=None)
    install_error_handlers(app)
    use_house_openapi(app)
    add_docs_pages(app)
    return app


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Every 4xx and 5xx answer: the contract's ErrorBody."""
    return JSONResponse(ErrorBody(error=message).model_dump(), status_code=status, headers=headers)


RETRY_SHORTLY = {"Retry-After": "1"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
        return error(400, f"{field or 'request'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(PoolTimeout)
    @app.exception_handler(KafkaError)
    async def _dependency_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s %s: dependency unavailable (%s)", request.method, request.url.path, type(exc).__name__)
        return error(503, "a dependency is unavailable; retry shortly", {"Retry-After": "1"})

    @app.exception_handler(ClientDisconnect)
    async def _gone(_: Request, __: Exception) -> JSONResponse:
        # the client left (or the front door cut a body that came too slowly): nobody to answer
        return error(408, "the request body did not arrive")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error(500, "internal error")


async def read_body_capped(request: Request, max_bytes: int) -> bytes | None:
    """The request body, or None as soon as it exceeds `max_bytes` (never read whole)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
