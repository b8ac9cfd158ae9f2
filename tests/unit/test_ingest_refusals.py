"""How ingest's app answers a refused submit (services/ingest/app.py: refusal): the statuses,
bodies and Retry-After headers the API documents, one per domain error."""

from __future__ import annotations

import json

import pytest

from services.ingest.app import refusal
from services.ingest.domain import JobTooLarge, KeyReused, NotAccepted, OverQuota
from services.ingest.quota import Refusal
from shared.schedule_time import InvalidInput


@pytest.mark.parametrize(("exc", "status", "message", "retry_after"), [
    (InvalidInput("count: required"), 400, "count: required", None),
    (JobTooLarge("job too large to store as one event; split it into smaller jobs"), 413,
     "job too large to store as one event; split it into smaller jobs", None),
    (KeyReused(), 409, "Idempotency-Key was used with a different body", None),
    (OverQuota(Refusal("rate", "submit rate over 20 images/s for this tenant", 3)), 429,
     "submit rate over 20 images/s for this tenant", "3"),
    (NotAccepted("not connected to Kafka yet; retry shortly"), 503, "not connected to Kafka yet; retry shortly", "1"),
])
def test_each_refusal_is_its_documented_answer(exc: Exception, status: int, message: str, retry_after: str | None,
                                               ) -> None:
    response = refusal(exc)
    assert response.status_code == status and json.loads(response.body) == {"error": message}
    assert response.headers.get("retry-after") == retry_after
