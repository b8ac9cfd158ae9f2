"""The API contract: the request and response bodies of every route, as pydantic models.

These models are the one schema of the HTTP API: ingest validates a submitted body with `JobIn`,
the services answer with the response models (`model_response(model)` writes one as the
response's JSON), and the OpenAPI documents are generated from the same models, with one error
model for every 4xx/5xx actually sent, the bearer scheme, and no 422 (the API never sends one:
every invalid input is a 400 naming the field)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, FastAPI, Header
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from starlette.responses import Response

from shared.api_fields import STORE_ID_RULE, URL_RULE, VISIT_TIME_RULE, HttpUrl, StoreId, VisitTime, field_rule
from shared.events import DEFAULT_PRIORITY
from shared.schedule_time import InvalidInput, resolve_scheduled_time

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
    store_id: StoreId
    image_url: list[HttpUrl] = Field(min_length=1)
    visit_time: VisitTime = Field(description="HH:MM[:SS] or an ISO-8601 date-time")


@dataclass(frozen=True)
class Limits:
    """What a deployment allows in a job (ingest's settings)."""

    max_images: int = 10_000
    max_schedule_days: int = 366
    webhooks: bool = False  # a callback_url is accepted only when WEBHOOK_SECRET is set


@dataclass(frozen=True)
class Deployment:
    """The validation context of a submitted `JobIn`: the deployment's limits, the time zone of a
    naive time and the moment of the submit. Without it, only the body's own rules apply."""

    limits: Limits
    tz: ZoneInfo
    now: datetime


def _deployment(info: ValidationInfo) -> Deployment | None:
    return info.context if isinstance(info.context, Deployment) else None


class JobIn(BaseModel):
    """A job: `count` equals the number of visits; `scheduled_time` ISO-8601 (naive: in
    DEFAULT_TIMEZONE; absent or past: now)."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_JOB]})
    count: int = Field(strict=True)  # 1.0 and true are not counts
    scheduled_time: str | None = None
    visits: list[VisitIn] = Field(min_length=1)
    priority: int = Field(3, ge=1, le=5, strict=True, description=(
        "1 (highest) to 5 (lowest): within its tenant's share of the processors, a job of higher priority goes "
        "first"))
    callback_url: HttpUrl | None = Field(None, max_length=2048, description=(
        "an absolute http(s) URL: once the job is final, its status (the JSON of GET /api/status/{id}) is POSTed "
        "there, signed by the Standard Webhooks convention (see the callback), and retried until a 2xx. Accepted "
        "only when the deployment has a WEBHOOK_SECRET"))

    @field_validator("visits", mode="before")
    @classmethod
    def _as_many_as_counted(cls, visits: Any, info: ValidationInfo) -> Any:
        """A count that is an integer must match a list of visits (before the visits are read)."""
        count = info.data.get("count")
        if isinstance(visits, list) and visits and count is not None and count != len(visits):
            raise named_error(f"count: {count} does not match the number of visits ({len(visits)})")
        return visits

    @field_validator("visits")
    @classmethod
    def _within_the_image_limit(cls, visits: list[VisitIn], info: ValidationInfo) -> list[VisitIn]:
        deployment = _deployment(info)
        total = sum(len(visit.image_url) for visit in visits)
        if deployment is not None and total > deployment.limits.max_images:
            raise field_rule(f"{total} images exceed the limit of {deployment.limits.max_images} per job")
        return visits

    @field_validator("scheduled_time")
    @classmethod
    def _schedulable(cls, value: str | None, info: ValidationInfo) -> str | None:
        """An ISO-8601 date-time within the deployment's horizon (shared/schedule_time.py)."""
        deployment = _deployment(info)
        if value is not None and deployment is not None:
            try:
                resolve_scheduled_time(value, deployment.now, deployment.tz, deployment.limits.max_schedule_days)
            except InvalidInput as exc:
                raise named_error(str(exc)) from None
        return value

    @field_validator("priority", mode="before")
    @classmethod
    def _null_is_the_default(cls, value: Any) -> Any:
        return DEFAULT_PRIORITY if value is None else value

    @field_validator("callback_url", mode="before")
    @classmethod
    def _webhooks_on(cls, value: Any, info: ValidationInfo) -> Any:
        deployment = _deployment(info)
        if value is not None and deployment is not None and not deployment.limits.webhooks:
            raise field_rule("webhooks are off on this deployment (WEBHOOK_SECRET is not set)")
        return value


def named_error(message: str) -> PydanticCustomError:
    """A broken rule whose message names its field itself."""
    return PydanticCustomError("named_rule", message)


# The message of any other error in a field (a wrong type, a bound, missing), by the field's
# name; `[]` is an element of the list of that name.
FIELD_RULES = {"count": "must be an integer", "visits": "must be a non-empty list", "visits[]": "must be an object",
               "store_id": STORE_ID_RULE, "image_url": "must be a non-empty list of URLs", "image_url[]": URL_RULE,
               "visit_time": VISIT_TIME_RULE, "scheduled_time": "must be an ISO-8601 date-time string",
               "priority": "must be an integer from 1 (highest) to 5 (lowest)", "callback_url": URL_RULE}
REQUIRED = {"count", "visit_time"}  # missing: `required` (the other fields: their rule)
# The order a body is read in: of several broken rules, the first is answered.
READING_ORDER = ("count", "visits", "scheduled_time", "priority", "callback_url")


def first_error(exc: ValidationError) -> str:
    """The 400 message for a body `JobIn` refused: the first broken rule, naming its field
    (`visits[0].store_id: must be a non-empty string`)."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    first = min(errors, key=lambda e: READING_ORDER.index(e["loc"][0]) if e["loc"] else -1)
    loc, kind = first["loc"], first["type"]
    if kind == "named_rule":
        return first["msg"]
    if not loc:
        return "body is not valid JSON" if kind == "json_invalid" else "body must be a JSON object"
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    if kind == "field_rule":
        return f"{path}: {first['msg']}"
    name = loc[-1] if isinstance(loc[-1], str) else f"{loc[-2]}[]"
    return f"{path}: {'required' if kind == 'missing' and name in REQUIRED else FIELD_RULES[str(name)]}"


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


class RescheduleIn(BaseModel):
    scheduled_time: str = Field(json_schema_extra={"format": "date-time"}, description=(
        "ISO-8601; naive times are in DEFAULT_TIMEZONE; a past time means now"))


class JobChanged(BaseModel):
    """A cancel or reschedule the job's release owner accepted: the job as reads now show it."""

    job_id: str
    status: str = Field(description="cancelled, or scheduled (rescheduled)")
    scheduled_time: str = Field(description="UTC, ISO-8601")


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
# bodies a route reads itself (no body parameter): request_body(model, example) documents them
REQUEST_MODELS: list[type[BaseModel]] = [JobIn, BatchStatusIn, RescheduleIn]


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
