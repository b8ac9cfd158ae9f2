"""The OpenAPI documents a client generator reads: a request body with an example for the
submit, a response model and the one error model on every 4xx/5xx, no 422 (never sent), the
bearer scheme. And the example in the document is a job the API accepts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.client import Client, example_job
from tests.support.contract import ContractCheck


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


def test_no_422_and_every_error_is_the_error_model(client: Client) -> None:
    for url in (client.ingest, client.status_url):
        spec = client.http.get(f"{url}/openapi.json").json()
        assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
        for path, method, op in operations(spec):
            assert "422" not in op["responses"], (path, method)
            for code, answer in op["responses"].items():
                if code.startswith(("4", "5")):
                    schema = answer["content"]["application/json"]["schema"]
                    model = "NotReady" if path == "/readyz" else "ErrorBody"
                    assert schema == {"$ref": f"#/components/schemas/{model}"}, (path, method, code)
        errors = spec["components"]["schemas"]
        assert errors["ErrorBody"]["required"] == ["error"]
        # readiness's 503 is the error model with the checks beside it
        assert errors["NotReady"]["properties"]["error"] == errors["ErrorBody"]["properties"]["error"]
        assert {"error", "ready", "checks"} <= set(errors["NotReady"]["required"])



def test_the_documented_example_job_is_accepted(client: Client) -> None:
    spec = client.http.get(f"{client.ingest}/openapi.json").json()
    body = spec["paths"]["/processJob"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/JobIn"}
    assert set(spec["components"]["schemas"]["JobIn"]["required"]) == {"count", "visits"}
    example = body["example"]
    example["visits"] = [{**v, "image_url": [u.replace("http://127.0.0.1:8090", client.images) for u in v["image_url"]]}
                         for v in example["visits"]]
    accepted = client.submit(example)
    assert accepted.status_code == 200, accepted.text
    assert set(accepted.json()) == set(spec["components"]["schemas"]["Accepted"]["properties"])
    assert client.wait_final(accepted.json()["job_id"])["status"] == "completed"


def test_status_routes_document_their_answers(client: Client) -> None:
    spec = client.http.get(f"{client.status_url}/openapi.json").json()
    status = spec["paths"]["/api/status/{job_id}"]["get"]["responses"]
    assert status["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/JobStatus"}
    assert {"400", "404", "503"} <= set(status)
    listing = spec["paths"]["/api/jobs"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert listing == {"$ref": "#/components/schemas/JobList"}


def test_the_progress_stream_and_batch_status_are_documented_and_answer_as_documented(client: Client) -> None:
    spec = client.http.get(f"{client.status_url}/openapi.json").json()
    stream = spec["paths"]["/api/jobs/{job_id}/events"]["get"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert {"204", "400", "404", "503"} <= set(stream["responses"])
    assert any(p["name"] == "last-event-id" and p["in"] == "header" for p in stream["parameters"])
    batch = spec["paths"]["/api/status"]["post"]
    assert batch["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/BatchStatus"}
    documented = set(spec["components"]["schemas"]["BatchStatus"]["properties"])
    later = (datetime.now(UTC) + timedelta(days=300)).isoformat()
    job_id = client.submit_ok({"count": 1, "scheduled_time": later, "visits": [
        {"store_id": "S00339218", "image_url": [client.image(3, 4)], "visit_time": "10:00"}]})
    answer = client.http.post(f"{client.status_url}/api/status", json={"job_ids": [job_id]}).json()
    assert set(answer) == documented
    assert set(answer["jobs"][0]) <= set(spec["components"]["schemas"]["JobStatus"]["properties"])


def test_every_answer_is_checked_against_the_documents(client: Client, answers_as_documented: ContractCheck) -> None:
    """The response check of tests/e2e/conftest.py is on and finds both documents: a renamed
    title or a moved document would otherwise turn it into a check of nothing."""
    job_id = client.submit_ok(example_job(client))
    assert client.status(job_id).status_code == 200
    assert client.http.get(f"{client.status_url}/api/status/not-a-uuid").status_code == 400
    checked = {origin: document for origin, document in answers_as_documented.documents.items() if document}
    assert set(checked) == {client.ingest, client.status_url}, answers_as_documented.documents
    assert {d.spec["info"]["title"] for d in checked.values()} == {"imagejobs ingest", "imagejobs status"}
    assert not answers_as_documented.mismatches
