"""Cancel and reschedule through the real stack: decided by the scheduler, answered with the
decision, and every read after the answer reflects it."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from tests.support.client import Client, example_job
from tests.support.waiting import wait_for


def at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def cancel(client: Client, job_id: str) -> httpx.Response:
    return client.http.delete(f"{client.status_url}/api/jobs/{job_id}")


def reschedule(client: Client, job_id: str, body: Any) -> httpx.Response:
    return client.http.patch(f"{client.status_url}/api/jobs/{job_id}", json=body)


def tasks_and_results(client: Client, job_id: str) -> tuple[int, int]:
    tasks = [e for _, e in client.topic_events("tasks", job_id)]
    return len(tasks), len(client.result_rows(job_id))


def released_at(client: Client, job_id: str) -> datetime:
    released = [e for _, e in client.topic_events("jobs", job_id) if e.type == "JobReleased"]
    assert len(released) == 1, released
    return released[0].occurred_at


def test_a_cancelled_job_reads_cancelled_at_once_and_is_never_released(client: Client) -> None:
    job_id = client.submit_ok(example_job(client, scheduled_time=at(1.5)))
    answer = cancel(client, job_id)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "cancelled"
    assert client.status(job_id).json()["status"] == "cancelled"  # read-your-writes, no waiting
    again = cancel(client, job_id)
    assert (again.status_code, again.json()["status"]) == (200, "cancelled")
    refused = reschedule(client, job_id, {"scheduled_time": at(60)})
    assert refused.status_code == 409 and "already cancelled" in refused.json()["error"]
    due = parse(answer.json()["scheduled_time"])
    wait_for(lambda: datetime.now(UTC) > due + timedelta(seconds=1), 5, "the due time to pass")
    client.wait_final(client.submit_ok(example_job(client)))  # the scheduler is releasing meanwhile
    assert client.status(job_id).json()["status"] == "cancelled"
    assert tasks_and_results(client, job_id) == (0, 0)
    with psycopg.connect(client.stack.database_url) as conn:
        state = conn.execute("SELECT state FROM scheduler_jobs WHERE job_id = %s", (job_id,)).fetchone()
    assert state == ("cancelled",)


def test_a_released_job_cannot_be_cancelled_or_rescheduled(client: Client) -> None:
    done = client.submit_ok(example_job(client))
    client.wait_final(done)
    for response in (cancel(client, done), reschedule(client, done, {"scheduled_time": at(60)})):
        assert response.status_code == 409, response.text
        assert list(response.json()) == ["error"] and "already completed" in response.json()["error"]
    assert client.status(done).json()["status"] == "completed"


def test_reschedule_later_runs_at_the_new_time_only(client: Client) -> None:
    job_id = client.submit_ok(example_job(client, scheduled_time=at(1.5)))
    new_time = at(4)
    answer = reschedule(client, job_id, {"scheduled_time": new_time})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "scheduled" and parse(body["scheduled_time"]) == parse(new_time)
    assert parse(client.status(job_id).json()["scheduled_time"]) == parse(new_time)  # read-your-writes
    final = client.wait_final(job_id, 30)
    assert final["status"] == "completed"
    assert released_at(client, job_id) >= parse(new_time)
    assert tasks_and_results(client, job_id) == (3, 3)


def test_reschedule_earlier_runs_at_the_new_time(client: Client) -> None:
    job_id = client.submit_ok(example_job(client, scheduled_time=at(3600)))
    new_time = at(1)
    answer = reschedule(client, job_id, {"scheduled_time": new_time})
    assert answer.status_code == 200, answer.text
    final = client.wait_final(job_id, 30)
    assert final["status"] == "completed" and parse(final["scheduled_time"]) == parse(new_time)
    late = (released_at(client, job_id) - parse(new_time)).total_seconds()
    assert 0 <= late < 5, late


def test_reschedule_into_the_past_means_now(client: Client) -> None:
    job_id = client.submit_ok(example_job(client, scheduled_time=at(3600)))
    before = datetime.now(UTC)
    answer = reschedule(client, job_id, {"scheduled_time": "2020-01-01T00:00:00+05:30"})
    assert answer.status_code == 200, answer.text
    assert parse(answer.json()["scheduled_time"]) >= before - timedelta(seconds=1)
    assert client.wait_final(job_id, 30)["status"] == "completed"


def test_a_naive_reschedule_time_is_read_in_the_default_timezone(client: Client) -> None:
    job_id = client.submit_ok(example_job(client, scheduled_time=at(3600)))
    local = (datetime.now(UTC) + timedelta(days=10)).replace(tzinfo=None, microsecond=0)
    answer = reschedule(client, job_id, {"scheduled_time": local.isoformat()})
    assert answer.status_code == 200, answer.text
    assert parse(answer.json()["scheduled_time"]) == (local - timedelta(hours=5, minutes=30)).replace(tzinfo=UTC)
    assert cancel(client, job_id).status_code == 200


def test_bad_reschedule_requests_get_400_and_change_nothing(client: Client) -> None:
    job_id = client.submit_ok(example_job(client, scheduled_time=at(3600)))
    scheduled = client.status(job_id).json()["scheduled_time"]
    url = f"{client.status_url}/api/jobs/{job_id}"
    for body in ({}, {"scheduled_time": None}, {"scheduled_time": 12}, {"scheduled_time": "tomorrow"},
                 {"scheduled_time": "2999-01-01T00:00:00Z"}, [1]):
        response = client.http.patch(url, json=body)
        assert response.status_code == 400, (body, response.text)
        assert "scheduled_time" in response.json()["error"]
    bad_json = client.http.patch(url, content=b"{", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["error"].startswith("body:")
    huge = client.http.patch(url, content=b" " * 20_000 + b"{}")
    assert huge.status_code == 400
    for bad_id in ("not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        assert reschedule(client, bad_id, {"scheduled_time": at(5)}).status_code in (400, 404)
        assert cancel(client, bad_id).status_code in (400, 404)
    assert client.status(job_id).json()["scheduled_time"] == scheduled
    assert cancel(client, job_id).status_code == 200


def test_reschedules_racing_the_release_are_answered_truthfully(client: Client) -> None:
    """Jobs due in about a second, each moved an hour ahead around its due instant: an accepted
    move never runs (until cancelled), a refused one has run."""
    due = datetime.now(UTC) + timedelta(seconds=3)
    jobs = [client.submit_ok(example_job(client, scheduled_time=due.isoformat())) for _ in range(40)]
    assert datetime.now(UTC) < due - timedelta(milliseconds=300), "submitting took too long to race"

    def move(i_job: tuple[int, str]) -> tuple[str, int]:
        i, job_id = i_job
        # the first five well ahead (accepted whatever the load), the rest across the due instant
        wait_until = due - timedelta(seconds=1.5) if i < 5 else due + timedelta(milliseconds=-200 + 10 * i)
        pause = (wait_until - datetime.now(UTC)).total_seconds()
        if pause > 0:
            time.sleep(pause)  # spreads the requests across the due instant, by design
        return job_id, http.patch(f"{client.status_url}/api/jobs/{job_id}",
                                  json={"scheduled_time": at(3600)}).status_code

    # one client made in advance: making one per request costs more than the whole spread
    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=len(jobs))) as http, \
            ThreadPoolExecutor(len(jobs)) as pool:
        answers = dict(pool.map(move, enumerate(jobs)))
    assert set(answers.values()) <= {200, 409}, answers
    for job_id, code in answers.items():
        if code == 200:
            assert client.status(job_id).json()["status"] == "scheduled"
            assert tasks_and_results(client, job_id) == (0, 0)
            assert cancel(client, job_id).status_code == 200
        else:
            assert client.wait_final(job_id, 30)["status"] == "completed"
    accepted, refused = list(answers.values()).count(200), list(answers.values()).count(409)
    print(f"\nreschedules racing the release: {accepted} accepted, {refused} refused")
    assert accepted >= 5 and refused, "the requests did not straddle the release"


def test_the_openapi_document_describes_cancel_and_reschedule_with_their_answers(client: Client) -> None:
    document = client.http.get(f"{client.status_url}/openapi.json").json()
    paths, schemas = document["paths"]["/api/jobs/{job_id}"], document["components"]["schemas"]
    for method in ("delete", "patch"):
        answers = paths[method]["responses"]
        assert {"200", "409", "404", "504"} <= set(answers), (method, list(answers))
        assert "release owner" in answers["200"]["description"]
        assert answers["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/JobChanged"}
        assert answers["409"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert schemas["JobChanged"]["required"] == ["job_id", "status", "scheduled_time"]
    body = paths["patch"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/RescheduleIn"} and "scheduled_time" in body["example"]
    assert schemas["RescheduleIn"]["required"] == ["scheduled_time"]
    assert schemas["RescheduleIn"]["properties"]["scheduled_time"]["format"] == "date-time"
