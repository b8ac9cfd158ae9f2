"""The operational endpoints every service serves: `/healthz` (the process is alive),
`/readyz` (Kafka, PostgreSQL and the service's own checks pass) and `/metrics` (Prometheus)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ConfigDict

from shared.api import ErrorBody
from shared.metrics import SERVICE_READY
from shared.runtime import Runtime


class NotReady(ErrorBody):
    """`/readyz`'s 503: the house error model, `error` naming the checks failing, with each
    check's result, the reasons known and the service's own details beside it."""

    model_config = ConfigDict(extra="allow")
    ready: bool
    checks: dict[str, bool]
    reasons: dict[str, str]


def ops_router(runtime: Runtime, details: Callable[[], dict[str, object]] | None = None) -> APIRouter:
    """`/healthz` (the process is alive), `/readyz` (its dependencies answer), `/metrics`."""
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok", "service": runtime.service}

    not_ready = {"model": NotReady, "description": "Not ready: `error` names the checks failing"}

    @router.get("/readyz", responses={503: not_ready})
    async def readyz() -> JSONResponse:
        """200 when Kafka, PostgreSQL and the service's own checks pass, else 503 naming what
        is not."""
        checks, reasons = await runtime.readiness_details()
        ready = all(checks.values())
        SERVICE_READY.labels(runtime.service).set(1 if ready else 0)
        body: dict[str, object] = {"ready": ready, "checks": checks}
        if not ready:  # the house error model, with the details beside it
            failing = [f"{k} ({reasons[k]})" if k in reasons else k for k, ok in checks.items() if not ok]
            body = {"error": "not ready: " + ", ".join(failing), **body, "reasons": reasons}
        if details:
            body.update(details())
        return JSONResponse(body, status_code=200 if ready else 503)

    @router.get("/metrics", response_class=PlainTextResponse)  # documented as the text it is
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router
