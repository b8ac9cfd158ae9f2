"""The API contract: the request and response bodies of every route, as pydantic models.

These models are the one schema of the HTTP API: ingest validates a submitted body with `JobIn`,
the services answer with the response models (`model_response(model)` writes one as the
response's JSON), and the OpenAPI documents are generated from the same models, with one error
model for every 4xx/5xx actually sent, the bearer scheme, and no 422 (the API never sends one:
every invalid input is a 400 naming the field)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

EXAMPLE_JOB = {
    "count": 2,
    "scheduled_time": "2025-02-16T10:57:00+05:30",
    "visits": [
        {"store_id": "S00339218", "image_url": ["http://127.0.0.1:8090/webp/gallery/2.jpg",
                                                 "http://127.0.0.1:8090/webp/gallery/3.jpg"], "visit_time": "10:00:00"},
        {"store_id": "S01408764", "image_url": ["http://127.0.0.1:8090/webp/gallery/3.jpg"], "visit_time": "10:05:00"},
    ],
}


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer."""

    error: str = Field(examples=["visits[0].store_id: must be a non-empty string"])


class VisitIn(BaseModel):
    store_id: str
    image_url: list[str] = Field(min_length=1)
    visit_time: str = Field(description="HH:MM[:SS] or an ISO-8601 date-time")


class JobIn(BaseModel):
    """A job: `count` equals the number of visits; `scheduled_time` ISO-8601 (naive: in
    DEFAULT_TIMEZONE; absent or past: now)."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_JOB]})
    count: int
    scheduled_time: str | None = None
    visits: list[VisitIn] = Field(min_length=1)
    priority: int = Field(3, ge=1, le=5, description="1 (highest) to 5 (lowest): within its tenant's share of "
                                                      "the processors, a job of higher priority goes first")
    callback_url: str | None = Field(None, max_length=2048, description=(
        "an absolute http(s) URL: once the job is final, its status (the JSON of GET /api/status/{id}) is POSTed "
        "there, signed by the Standard Webhooks convention (see the callback), and retried until a 2xx. Accepted "
        "only when the deployment has a WEBHOOK_SECRET"))


class Accepted(BaseModel):
    job_id: str
    message: str = "Job scheduled for processing"
    scheduled_time: str = Field(description="UTC, ISO-8601")


class Images(BaseModel):
    total: int
    succeeded: int
    failed: int
    pending: int
    started: int = Field(description="handed to the processors so far (in progress, queued at a processor, or "
                                     "finished): below total while the job waits for its share")


class StoreError(BaseModel):
    store_id: str
    error: str


class JobStatus(BaseModel):
    job_id: str
    status: str = Field(description="scheduled, ongoing, completed, failed or cancelled")
    scheduled_time: str
    priority: int = Field(description="1 (highest) to 5 (lowest)")
    images: Images
    # present only when failed: serialised without it otherwise
    error: list[StoreError] | None = Field(None, description="when failed: the first reason per store",
                                           exclude_if=lambda errors: errors is None)


class JobListed(JobStatus):
    submitted_at: str


class JobList(BaseModel):
    jobs: list[JobListed]
    next_cursor: str | None


class BatchStatusIn(BaseModel):
    job_ids: list[str] = Field(min_length=1, max_length=1000, description="1 to 1,000 job ids (UUIDs)")


class BatchStatus(BaseModel):
    jobs: list[JobStatus] = Field(description="the statuses found, in the order asked (repeats once)")
    not_found: list[str] = Field(description="ids of no job of yours: unknown, or another tenant's")


class Result(BaseModel):
    task_id: str
    store_id: str
    image_url: str
    status: str
    width: int | None
    height: int | None
    perimeter: int | None
    error: str | None


class Results(BaseModel):
    job_id: str
    limit: int
    offset: int
    results: list[Result]


class WebhookAttempt(BaseModel):
    attempt: int = Field(description="1, 2, ...")
    at: str = Field(description="when it was sent (UTC, ISO-8601)")
    status_code: int | None = Field(description="the receiver's HTTP status; null when there was none")
    error: str | None = Field(description="why it did not deliver (`HTTP 500`, `no answer within 10s`, "
                                          "`address not allowed: ...`); null for a 2xx")
    duration_ms: int


class WebhookStatus(BaseModel):
    url: str = Field(description="the job's callback_url")
    webhook_id: str = Field(description="the `webhook-id` header of every attempt")
    state: str = Field(description="waiting (the job is not final yet), pending (tried again at next_attempt_at), "
                                   "delivered, or failed (its address is refused, or WEBHOOK_RETRY_FOR_S passed)")
    attempts: list[WebhookAttempt]
    next_attempt_at: str | None = Field(description="when the next attempt is due; null unless pending")
    delivered_at: str | None


def model_response(model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """`model` as the JSON of a response (compact, as FastAPI's JSONResponse writes it)."""
    return Response(model.__pydantic_serializer__.to_json(model), status_code, headers,
                    media_type="application/json")


# The completion webhook, as a callback of POST /processJob in ingest's document: what the
# status service sends to the submitted callback_url (documentation only; nothing serves it).
webhook_callbacks = APIRouter()
_SIGNED = "Standard Webhooks (https://www.standardwebhooks.com): "


@webhook_callbacks.post("{$request.body#/callback_url}", summary="The job is final", response_description=(
    "Any 2xx: delivered (the answer's body is read up to 64 KiB and ignored). Anything else, a redirect, no "
    "answer within WEBHOOK_TIMEOUT_S: tried again with exponential backoff and jitter, for up to "
    "WEBHOOK_RETRY_FOR_S (24 h) after the job became final"))
def job_final(body: JobStatus,
              webhook_id: Annotated[str, Header(alias="webhook-id", description=(
                  _SIGNED + "the message's id, `msg_<job_id>`: the same on every attempt, so drop repeats by it"))],
              webhook_timestamp: Annotated[str, Header(alias="webhook-timestamp", description=(
                  _SIGNED + "when this attempt was signed, in Unix seconds; refuse one far from your clock"))],
              webhook_signature: Annotated[str, Header(alias="webhook-signature", description=(
                  _SIGNED + "`v1,` + base64 of HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}`, keyed "
                            "with the base64-decoded part of WEBHOOK_SECRET after `whsec_`. Verify with "
                            "`standardwebhooks.Webhook(secret).verify(body, headers)`"))]) -> None:
    """Sent once the job is completed, failed or cancelled: the body is exactly what `GET
    /api/status/{job_id}` answers then, as `application/json`. At least once: a retry, or a
    status service restarted mid-attempt, sends it again with the same `webhook-id`."""


WHY = {400: "Invalid input, naming the field", 401: "Missing or invalid API key (when API_KEYS is set)",
       404: "No such job (or another tenant's)", 409: "Conflict (see the message)",
       413: "Body over the size limit", 415: "Content type is not JSON",
       429: "Over a tenant quota (pending images or submit rate; the message says which, with the"
            " tenant's numbers): nothing published; retry after `Retry-After` seconds",
       503: "Kafka or PostgreSQL unavailable: nothing changed, retry"}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": WHY[code]} for code in codes}


def use_house_openapi(app: FastAPI) -> None:
    """The document without FastAPI's 422 (every invalid input is a 400 `ErrorBody`) and with
    the bearer scheme, built once."""
    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
                for callback in operation.get("callbacks", {}).values():  # the webhook's documented POST
                    for callback_operations in callback.values():
                        for callback_operation in callback_operations.values():
                            callback_operation.get("responses", {}).pop("422", None)
        components = schema.setdefault("components", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.get("schemas", {}).pop(unused, None)
        _add_request_models(schema)
        components.setdefault("securitySchemes", {})["HTTPBearer"] = {
            "type": "http", "scheme": "bearer", "description": "An API key from API_KEYS (when it is set)"}
        app.openapi_schema = schema
        return schema
    app.openapi = build  # type: ignore[method-assign]


REF = "#/components/schemas/{model}"
REQUEST_MODELS: list[type[BaseModel]] = [JobIn]  # bodies a route reads itself (no body parameter)


def request_body(model: type[BaseModel], example: Any) -> dict[str, Any]:
    """`openapi_extra` for a route that parses its own body: the model, by reference."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": REF.format(model=model.__name__)}, "example": example}}}}


def _add_request_models(schema: dict[str, Any]) -> None:
    """Put the request models (and the models they use) into the document's components."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in REQUEST_MODELS:
        if REF.format(model=model.__name__) not in str(schema.get("paths")):
            continue
        definition = model.model_json_schema(ref_template=REF)
        schemas.update(definition.pop("$defs", {}))
        schemas[model.__name__] = definition
