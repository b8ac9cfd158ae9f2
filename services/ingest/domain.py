"""Submitting a job, as rules: pure, no I/O; the clock is a parameter.

`job_submitted(raw, owner, deployment)` reads a submitted body with the API contract's `JobIn`
(shared/api.py) under the deployment's limits and returns the `JobSubmitted` event to publish,
or raises `InvalidInput` whose message names the offending field (it becomes the 400 body).
The errors the submit use case raises for the app to answer are here too.
"""

from __future__ import annotations

import json
from uuid import uuid4

from pydantic import TypeAdapter, ValidationError

from services.ingest.quota import Refusal
from shared.api import Deployment, JobIn, first_error
from shared.events import JobSubmitted, Visit
from shared.schedule_time import InvalidInput, resolve_scheduled_time

SUBMITTED_BODY = TypeAdapter(JobIn)


class JobTooLarge(Exception):  # noqa: N818 - a client error, answered 413
    """The job's event would not fit in one Kafka record."""


class KeyReused(Exception):  # noqa: N818 - a client error, answered 409
    """The Idempotency-Key was first used with a different body."""


class OverQuota(Exception):  # noqa: N818 - answered 429 with Retry-After
    """The tenant's quota refuses the job; nothing was published."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


class NotAccepted(Exception):  # noqa: N818 - answered 503 with Retry-After
    """The job was not accepted and nothing will run; the message says why. A retry may succeed."""


def job_submitted(raw: bytes, owner: str | None, deployment: Deployment) -> JobSubmitted:
    """The event of a submitted JSON body (a new job id); InvalidInput naming the first broken rule."""
    job = _read(raw, deployment)
    visits = tuple(Visit(store_id=visit.store_id, image_urls=tuple(visit.image_url), visit_time=visit.visit_time)
                   for visit in job.visits)
    return JobSubmitted(job_id=uuid4(), visits=visits, owner=owner,
                        scheduled_time=resolve_scheduled_time(job.scheduled_time, deployment.now, deployment.tz),
                        priority=job.priority, callback_url=job.callback_url)


def _read(raw: bytes, deployment: Deployment) -> JobIn:
    try:
        return SUBMITTED_BODY.validate_json(raw, context=deployment)
    except ValidationError as exc:
        if exc.errors(include_url=False)[0]["type"] != "json_invalid":
            raise InvalidInput(first_error(exc)) from None
    # Python's JSON reader accepts what the fast one refuses (UTF-16 or a BOM, an escaped lone
    # surrogate, nesting deeper than 200): such a body is read as it always was, then the same
    # rules apply (a lone surrogate is refused naming its field)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidInput("body is not valid JSON") from None
    try:
        return SUBMITTED_BODY.validate_python(body, context=deployment)
    except ValidationError as exc:
        raise InvalidInput(first_error(exc)) from None
