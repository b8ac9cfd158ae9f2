"""`GET /api/jobs`: newest first, filtered by status, paginated by an opaque keyset cursor that
stays correct while new jobs arrive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.client import Client, example_job
from tests.support.waiting import wait_for


def listing(client: Client, **params: Any) -> Any:
    response = client.http.get(f"{client.status_url}/api/jobs", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_pages_walk_every_job_newest_first_even_while_jobs_arrive(client: Client) -> None:
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    submitted = [client.submit_ok(example_job(client, scheduled_time=later)) for _ in range(5)]
    wait_for(lambda: client.status(submitted[-1]).status_code == 200, 10, "the last job to be folded")
    first = listing(client, status="scheduled", limit=2)
    assert [j["job_id"] for j in first["jobs"]] == submitted[::-1][:2]
    newer = client.submit_ok(example_job(client, scheduled_time=later))  # arrives between pages
    seen, cursor = [j["job_id"] for j in first["jobs"]], first["next_cursor"]
    while cursor and len(seen) < 5:
        page = listing(client, status="scheduled", limit=2, cursor=cursor)
        seen += [j["job_id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
    assert seen[:5] == submitted[::-1] and newer not in seen
    job = first["jobs"][0]
    assert job["status"] == "scheduled" and job["images"]["total"] == 3 and job["submitted_at"].endswith("Z")
    for job_id in [*submitted, newer]:
        client.http.delete(f"{client.status_url}/api/jobs/{job_id}")


def test_the_status_filter_and_bad_parameters(client: Client) -> None:
    done = client.submit_ok(example_job(client))
    client.wait_final(done)
    assert done in [j["job_id"] for j in listing(client, status="completed", limit=200)["jobs"]]
    assert done not in [j["job_id"] for j in listing(client, status="failed", limit=200)["jobs"]]
    url = f"{client.status_url}/api/jobs"
    for params in ({"status": "done"}, {"limit": 0}, {"limit": 201}, {"cursor": "not-a-cursor"},
                   {"cursor": "MjAyNi0xMS0zMHx4"}):
        response = client.http.get(url, params=params)
        assert response.status_code == 400 and list(response.json()) == ["error"], (params, response.text)
