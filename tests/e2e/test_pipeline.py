"""The pipeline end to end: submit, hold until scheduled_time, process each image, status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from deploy.devstack.sample_images import GALLERY
from tests.support.client import Client, example_job
from tests.support.storestats import group_lag
from tests.support.waiting import wait_for


def test_design_example_job_completes_with_one_exact_row_per_image(client: Client) -> None:
    job_id = client.submit_ok(example_job(client))
    final = client.wait_final(job_id)
    assert final["status"] == "completed"
    assert final["images"] == {"total": 3, "succeeded": 3, "failed": 0, "pending": 0, "started": 3}
    rows = client.result_rows(job_id)
    expected = [("S00339218", *GALLERY[2]), ("S00339218", *GALLERY[3]), ("S01408764", *GALLERY[3])]
    assert [(r[1], r[2], r[3]) for r in rows] == expected
    assert [r[4] for r in rows] == [2 * (w + h) for _, w, h in expected]
    assert [r[0] for r in rows] == [f"{job_id}:0:0", f"{job_id}:0:1", f"{job_id}:1:0"]


def test_every_format_and_size_is_measured(client: Client) -> None:
    sizes = [(1, 1, "png"), (640, 480, "jpg"), (333, 777, "webp"), (50, 20, "gif"), (4000, 3000, "jpg")]
    body = {"count": 1, "visits": [{"store_id": "S00339218", "visit_time": "09:00",
                                    "image_url": [client.image(w, h, f) for w, h, f in sizes]}]}
    job_id = client.submit_ok(body)
    assert client.wait_final(job_id)["status"] == "completed"
    assert [(r[2], r[3], r[4]) for r in client.result_rows(job_id)] == [
        (w, h, 2 * (w + h)) for w, h, _ in sizes]


def test_job_is_held_until_its_time_then_completes(client: Client) -> None:
    scheduled = datetime.now(UTC) + timedelta(seconds=3)
    job_id = client.submit_ok(example_job(client, scheduled_time=scheduled.isoformat()))
    before = client.status(job_id).json()
    assert before["status"] == "scheduled"
    assert before["images"]["pending"] == 3
    final = client.wait_final(job_id, deadline_s=30)
    assert final["status"] == "completed"
    tasks = client.topic_events("tasks", job_id)
    assert len(tasks) == 3
    scheduled_ms = scheduled.timestamp() * 1000
    assert all(ts >= scheduled_ms - 1 for ts, _ in tasks), (scheduled_ms, [ts for ts, _ in tasks])
    released = [e for _, e in client.topic_events("jobs", job_id) if e.type == "JobReleased"]
    assert released and released[0].occurred_at >= scheduled


def test_unknown_store_fails_without_download(client: Client) -> None:
    url = client.image(123, 45) + "?unknown-store"
    body = {"count": 1, "visits": [{"store_id": "S_NOT_A_STORE", "image_url": [url], "visit_time": "10:00"}]}
    final = client.wait_final(client.submit_ok(body))
    assert final["status"] == "failed"
    assert final["error"] == [{"store_id": "S_NOT_A_STORE", "error": "store not found"}]
    hits = client.http.get(client.images + "/_stats").json()
    assert hits.get("/img/123x45.png", 0) == 0


def test_missing_image_fails_naming_its_store(client: Client) -> None:
    body = {"count": 1, "visits": [{"store_id": "S01408764", "visit_time": "10:00",
                                    "image_url": [client.images + "/status/404"]}]}
    final = client.wait_final(client.submit_ok(body))
    assert final["status"] == "failed"
    assert final["error"] == [{"store_id": "S01408764", "error": "HTTP 404 from the image server"}]


def test_mixed_job_lists_only_the_failing_stores(client: Client) -> None:
    body = {"count": 3, "visits": [
        {"store_id": "S00339218", "image_url": [client.image(10, 10)], "visit_time": "10:00"},
        {"store_id": "NOPE-1", "image_url": [client.image(11, 11)], "visit_time": "10:00"},
        {"store_id": "S01408764", "image_url": [client.image(12, 12), client.images + "/garbage.jpg"],
         "visit_time": "10:00"},
    ]}
    final = client.wait_final(client.submit_ok(body))
    assert final["status"] == "failed"
    assert final["images"] == {"total": 4, "succeeded": 2, "failed": 2, "pending": 0, "started": 4}
    assert final["error"] == [
        {"store_id": "NOPE-1", "error": "store not found"},
        {"store_id": "S01408764", "error": "not an image (unrecognised format)"},
    ]


def test_results_endpoint_pages_through_every_image(client: Client) -> None:
    body = {"count": 1, "visits": [{"store_id": "S00339218", "visit_time": "10:00",
                                    "image_url": [client.image(100 + i, 50) for i in range(5)]}]}
    job_id = client.submit_ok(body)
    client.wait_final(job_id)
    first = client.http.get(f"{client.status_url}/api/jobs/{job_id}/results?limit=3").json()
    rest = client.http.get(f"{client.status_url}/api/jobs/{job_id}/results?limit=3&offset=3").json()
    widths = [r["width"] for r in first["results"] + rest["results"]]
    assert widths == [100, 101, 102, 103, 104]


def test_status_right_after_submit_is_never_404(client: Client) -> None:
    far = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    for _ in range(20):
        job_id = client.submit_ok(example_job(client, scheduled_time=far))
        response = client.status(job_id)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "scheduled"


def test_unknown_and_malformed_job_ids(client: Client) -> None:
    missing = client.status("00000000-0000-4000-8000-000000000000")
    assert missing.status_code == 404 and missing.json() == {"error": "job not found"}
    bad = client.status("not-a-uuid")
    assert bad.status_code == 400 and "job_id" in bad.json()["error"]
    by_query = client.http.get(client.status_url + "/api/status", params={"jobid": "nope"})
    assert by_query.status_code == 400


def test_status_by_query_alias_and_submit_aliases(client: Client) -> None:
    for path in ("/api/submit", "/api/submit/"):
        response = client.http.post(client.ingest + path, json=example_job(client))
        assert response.status_code == 200, response.text
        job_id = response.json()["job_id"]
        by_query = client.http.get(client.status_url + "/api/status", params={"jobid": job_id})
        assert by_query.status_code == 200 and by_query.json()["job_id"] == job_id


def test_idempotency_key_returns_the_same_job(client: Client) -> None:
    body = example_job(client)
    key = {"Idempotency-Key": f"k-{datetime.now(UTC).timestamp()}"}
    first = client.submit(body, headers=key)
    second = client.submit(body, headers=key)
    assert first.status_code == second.status_code == 200
    assert first.json()["job_id"] == second.json()["job_id"]
    submitted = [e for _, e in client.topic_events("jobs", first.json()["job_id"]) if e.type == "JobSubmitted"]
    assert len({e.event_id for e in submitted}) == 1  # a re-publish of the same event, not a new job
    changed = client.submit({**body, "count": 2, "visits": body["visits"][::-1]}, headers=key)
    assert changed.status_code == 409
    job_id = first.json()["job_id"]
    assert client.wait_final(job_id)["status"] == "completed"
    # a retry after the job ran re-publishes its event once more: the scheduler must not run it again
    assert client.submit(body, headers=key).json()["job_id"] == job_id
    stack, jobs = client.stack, f"{client.stack.prefix}.jobs"
    wait_for(lambda: group_lag(stack, f"{stack.prefix}.scheduler", [jobs]) == 0, 30, "the scheduler to read the retry")
    released = [e for _, e in client.topic_events("jobs", job_id) if e.type == "JobReleased"]
    assert len(released) == 1 and len(client.topic_events("tasks", job_id)) == 3


def test_every_service_is_ready(stack) -> None:  # type: ignore[no-untyped-def]
    import httpx

    running, _ = stack
    for service in running.processes:
        if service.name == "sample_images":
            continue
        response = httpx.get(service.url + "/readyz", timeout=5)
        assert response.status_code == 200, (service.name, response.text)
        expected = {"kafka", "database"} | {"ingest": set(), "status": {"consumer"}, "scheduler": {"consumer"},
                                            "processor": {"consumer", "store_master"},
                                            # storestats: started by the dashboard test
                                            "storestats": {"settled", "progress"}}[service.name]
        assert response.json()["checks"] == dict.fromkeys(expected, True), service.name
        assert "imagejobs_ready" in httpx.get(service.url + "/metrics", timeout=5).text
