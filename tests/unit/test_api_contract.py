"""The API contract (shared/api.py): JobIn on its own and under a deployment, the submit's JSON
readers, and answers serialised from the response models as the services wrote them by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import TypeAdapter, ValidationError

from services.ingest.domain import job_submitted
from shared.api import (
    Deployment,
    Images,
    JobIn,
    JobList,
    JobListed,
    JobStatus,
    Limits,
    StoreError,
    first_error,
    model_response,
)
from shared.schedule_time import InvalidInput

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DEPLOYMENT = Deployment(Limits(max_images=2), ZoneInfo("Asia/Kolkata"), NOW)
VISIT = {"store_id": "S1", "image_url": ["http://img.test/a.jpg"], "visit_time": "10:00"}
JOB = {"count": 1, "visits": [VISIT]}


def refusal(body: Any, context: Deployment | None = None) -> str:
    with pytest.raises(ValidationError) as info:
        TypeAdapter(JobIn).validate_json(json.dumps(body), context=context)
    return first_error(info.value)


def test_without_a_deployment_only_the_bodys_own_rules_apply() -> None:
    lenient = {**JOB, "scheduled_time": "2099-01-01T00:00:00Z", "callback_url": "https://hooks.test/x",
               "visits": [{**VISIT, "image_url": ["http://img.test/1", "http://img.test/2", "http://img.test/3"]}]}
    job = TypeAdapter(JobIn).validate_json(json.dumps(lenient))
    assert job.callback_url == "https://hooks.test/x" and len(job.visits[0].image_url) == 3
    assert refusal(lenient, DEPLOYMENT) == "visits: 3 images exceed the limit of 2 per job"
    assert refusal({**JOB, "visits": [{**VISIT, "store_id": " "}]}) == "visits[0].store_id: must be a non-empty string"


def test_of_several_broken_rules_the_first_in_reading_order_is_answered() -> None:
    # pydantic reports scheduled_time before visits (field order); the body reads visits first
    both = {**JOB, "scheduled_time": 5, "visits": [{**VISIT, "visit_time": "25:00"}], "priority": 0}
    assert refusal(both).startswith("visits[0].visit_time: must be a time")
    assert refusal({**both, "count": 2}) == "count: 2 does not match the number of visits (1)"
    assert refusal({**JOB, "callback_url": 5}, DEPLOYMENT).startswith("callback_url: webhooks are off")


def submitted(raw: bytes) -> Any:
    return job_submitted(raw, None, DEPLOYMENT)


def test_json_only_pythons_reader_takes_is_read_as_before() -> None:
    deep = json.dumps({**JOB, "extra": json.loads("[" * 300 + "]" * 300)}).encode()
    for raw in (json.dumps(JOB).encode("utf-16"), b"\xef\xbb\xbf" + json.dumps(JOB).encode(), deep):
        assert submitted(raw).visits[0].store_id == "S1"
    with pytest.raises(InvalidInput, match=r"^visits\[0\]\.store_id: must not contain control characters$"):
        submitted(json.dumps({**JOB, "visits": [{**VISIT, "store_id": "S\ud800"}]}).encode())
    for raw in (b"{", b"\xff", b"[" * 100_000 + b"]" * 100_000):
        with pytest.raises(InvalidInput, match="^body is not valid JSON$"):
            submitted(raw)


def test_a_status_leaves_out_its_error_unless_it_has_one() -> None:
    images = Images(total=2, succeeded=1, failed=1, pending=0, started=2)
    ongoing = JobStatus(job_id="j", status="ongoing", scheduled_time="2026-01-01T00:00:00Z", priority=3, images=images)
    assert "error" not in json.loads(model_response(ongoing).body)
    failed = ongoing.model_copy(update={"status": "failed", "error": [StoreError(store_id="S1", error="HTTP 404")]})
    assert json.loads(model_response(failed).body)["error"] == [{"store_id": "S1", "error": "HTTP 404"}]
    listing = JobList(jobs=[JobListed(**ongoing.model_dump(), submitted_at="2026-01-01T00:00:00Z")], next_cursor=None)
    response = model_response(listing, 200)
    listed = {**ongoing.model_dump(exclude={"error"}), "submitted_at": "2026-01-01T00:00:00Z"}
    assert response.headers["content-type"] == "application/json"
    assert json.loads(response.body) == {"jobs": [listed], "next_cursor": None}
