"""The response check the end-to-end tests run (tests/support/contract.py) finds what it must."""

from __future__ import annotations

import json

from tests.support.contract import Document

SPEC = {
    "info": {"title": "imagejobs status"},
    "paths": {
        "/api/status/{job_id}": {"get": {"responses": {
            "200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobStatus"}}}},
            "404": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}}}},
        "/api/jobs/{job_id}/events": {"get": {"responses": {
            "200": {"content": {"text/event-stream": {"schema": {"type": "string"}}}},
            "204": {"description": "done"}}}},
    },
    "components": {"schemas": {
        "JobStatus": {"type": "object", "required": ["job_id", "status"],
                      "properties": {"job_id": {"type": "string", "format": "uuid"},
                                     "status": {"enum": ["ongoing", "completed", "failed"]}}},
        "ErrorBody": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    }},
}
JOB = "6f1c2a9e-1b2c-4d5e-8f90-123456789abc"
JSON = "application/json"


def check(status: int, body: object, path: str = f"/api/status/{JOB}", content_type: str = JSON) -> str | None:
    operation = Document(SPEC).operation("GET", path)
    assert operation is not None
    raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    return operation.check(status, content_type, raw)


def test_a_documented_answer_passes() -> None:
    assert check(200, {"job_id": JOB, "status": "completed"}) is None
    assert check(404, {"error": "no such job"}) is None
    assert check(200, None, f"/api/jobs/{JOB}/events", "text/event-stream; charset=utf-8") is None
    assert check(204, b"", f"/api/jobs/{JOB}/events", "") is None


def test_an_undocumented_status_fails() -> None:
    assert "status 503 is not documented" in str(check(503, {"error": "down"}))


def test_a_body_off_the_schema_fails_naming_the_field() -> None:
    assert "at status" in str(check(200, {"job_id": JOB, "status": "lost"}))
    assert "at job_id" in str(check(200, {"job_id": "not-a-uuid", "status": "completed"}))
    # a field the document does not name: the schema leaves additionalProperties open, the check does not
    assert "Additional properties" in str(check(200, {"job_id": JOB, "status": "completed", "extra": 1}))
    assert "'error' is a required property" in str(check(404, {"message": "no such job"}))
    assert "not JSON" in str(check(404, b"<html>"))


def test_an_undocumented_content_type_fails() -> None:
    assert "'text/plain' is not documented" in str(check(200, b"ok", content_type="text/plain"))
    assert "is not documented" in str(check(200, None, f"/api/jobs/{JOB}/events", JSON))


def test_paths_match_their_templates_only() -> None:
    document = Document(SPEC)
    assert document.operation("GET", "/api/status/x/y") is None
    assert document.operation("POST", f"/api/status/{JOB}") is None
    assert document.operation("GET", "/api/jobs/abc/events") is not None
