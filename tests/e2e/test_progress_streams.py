"""Push instead of poll, through the real stack: a progress stream follows a job from
`scheduled` to `completed` (resuming after a dropped connection with `Last-Event-ID`), and one
batch request answers many jobs' statuses."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.client import Client
from tests.support.sse import Stream


def unique_size() -> tuple[int, int]:
    """Dimensions no other test fetches (the processors cache by URL)."""
    return random.randint(2000, 9000), random.randint(2000, 9000) % 97 + 3


def job_due_in(client: Client, seconds: float, urls: list[str]) -> dict[str, Any]:
    due = (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()
    return {"count": 1, "scheduled_time": due,
            "visits": [{"store_id": "S00339218", "image_url": urls, "visit_time": "10:00"}]}


def events_url(client: Client, job_id: str) -> str:
    return f"{client.status_url}/api/jobs/{job_id}/events"


def test_a_stream_follows_a_job_to_completed_and_resumes_after_a_dropped_connection(client: Client) -> None:
    w, h = unique_size()
    slow = f"{client.images}/slow/1500/{w}x{h + 1}.png"  # the job stays ongoing for 1.5 s at least
    job_id = client.submit_ok(job_due_in(client, 2, [client.image(w, h), slow]))
    with client.http.stream("GET", events_url(client, job_id)) as first:
        assert first.status_code == 200
        assert first.headers["content-type"].startswith("text/event-stream")
        stream = Stream(first)
        opening = next(iter(stream))  # then the connection drops
    assert (opening.event, opening.retry) == ("status", 1000)
    assert opening.status["status"] == "scheduled" and opening.status["job_id"] == job_id

    with client.http.stream("GET", events_url(client, job_id), headers={"Last-Event-ID": opening.id or ""}) as again:
        assert again.status_code == 200
        resumed = Stream(again)
        statuses = [event.status for event in resumed]  # to the end: the server closes after the final
    assert statuses, "the resumed stream sent nothing"
    assert resumed.events[0].id != opening.id  # what the client had is not sent again
    assert statuses[-1] == client.status(job_id).json()  # the final event is exactly the status answer
    assert statuses[-1]["status"] == "completed" and statuses[-1]["images"]["succeeded"] == 2
    assert any(s["status"] == "ongoing" for s in statuses), statuses  # progress on the way, not just the end
    assert all(s["status"] != "scheduled" for s in statuses[1:])
    done = [s["images"]["succeeded"] + s["images"]["failed"] for s in statuses]
    assert done == sorted(done)  # progress only moves forward
    assert resumed.heartbeats >= 1  # STATUS_STREAM_HEARTBEAT_S is 0.5 s on the test stack

    final_id = resumed.events[-1].id or ""
    assert client.http.get(events_url(client, job_id), headers={"Last-Event-ID": final_id}).status_code == 204
    with client.http.stream("GET", events_url(client, job_id)) as late:  # a new client: the final status at once
        [only] = list(Stream(late))
    assert only.status == statuses[-1]


def test_a_stream_of_a_job_already_final_sends_it_once_and_closes(client: Client) -> None:
    job_id = client.submit_ok(job_due_in(client, 0, [client.image(*unique_size())]))
    final = client.wait_final(job_id)
    started = time.monotonic()
    with client.http.stream("GET", events_url(client, job_id)) as response:
        events = list(Stream(response))
    assert [e.status for e in events] == [final] and time.monotonic() - started < 5


def test_streams_of_unknown_or_malformed_jobs_answer_like_status(client: Client) -> None:
    unknown = client.http.get(events_url(client, "6f1c2a9e-1b2c-4d5e-8f90-123456789abc"))
    assert (unknown.status_code, unknown.json()) == (404, {"error": "job not found"})
    malformed = client.http.get(events_url(client, "not-a-uuid"))
    assert (malformed.status_code, malformed.json()) == (400, {"error": "job_id: must be a UUID"})


def test_batch_status_right_after_submit_answers_every_job_in_order(client: Client) -> None:
    later = [client.submit_ok(job_due_in(client, 86_400, [client.image(5, 5)])) for _ in range(3)]
    unknown = "6f1c2a9e-1b2c-4d5e-8f90-000000000001"
    answer = client.http.post(f"{client.status_url}/api/status", json={"job_ids": [later[2], unknown, *later[:2]]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [j["job_id"] for j in body["jobs"]] == [later[2], *later[:2]]
    assert body["not_found"] == [unknown]
    assert body["jobs"][0] == client.status(later[2]).json()  # each entry is the single status answer


def test_batch_status_of_a_failed_job_carries_its_errors(client: Client) -> None:
    job_id = client.submit_ok(job_due_in(client, 0, [f"{client.images}/status/404"]))
    final = client.wait_final(job_id)
    assert final["status"] == "failed" and final["error"]
    answer = client.http.post(f"{client.status_url}/api/status", json={"job_ids": [job_id]})
    assert answer.json() == {"jobs": [final], "not_found": []}


def test_batch_status_refuses_a_bad_body_naming_the_field(client: Client) -> None:
    url = f"{client.status_url}/api/status"
    for body, message in (({"job_ids": []}, "job_ids: from 1 to 1000 ids"),
                          ({"job_ids": ["x"]}, "job_ids[0]: must be a UUID"),
                          ({"ids": []}, "job_ids: required")):
        answer = client.http.post(url, json=body)
        assert answer.status_code == 400 and answer.json()["error"].startswith(message), answer.text
    raw = client.http.post(url, content=b"{", headers={"Content-Type": "application/json"})
    assert raw.status_code == 400 and raw.json()["error"].startswith("body: must be JSON")


def reads_from(client: Client, source: str) -> float:
    """The status process's count of status reads answered from `source` (memory or view)."""
    for line in client.http.get(f"{client.status_url}/metrics").text.splitlines():
        if line.startswith(f'imagejobs_status_reads_total{{source="{source}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_polled_status_comes_from_memory_yet_never_lags_what_the_stream_has_shown(client: Client) -> None:
    """One status instance folds every partition, so repeated reads are answered from memory;
    still, once the stream has shown a status (read from the view after the fold's commit), a
    status read right after says the same or later, never an older cached one."""
    w, h = unique_size()
    slow = f"{client.images}/slow/800/{w}x{h + 1}.png"
    job_id = client.submit_ok(job_due_in(client, 1, [client.image(w, h), slow]))
    memory_before = reads_from(client, "memory")
    for _ in range(3):
        assert client.status(job_id).json()["status"] == "scheduled"  # cached: nothing changes it till due
    rank = {"scheduled": 0, "ongoing": 1, "completed": 2}
    with client.http.stream("GET", events_url(client, job_id)) as response:
        for event in Stream(response):
            read = client.status(job_id).json()
            shown = event.status
            done = read["images"]["succeeded"] + read["images"]["failed"]
            assert rank[read["status"]] >= rank[shown["status"]], (shown, read)
            assert done >= shown["images"]["succeeded"] + shown["images"]["failed"], (shown, read)
    assert read == shown and read["status"] == "completed"
    assert reads_from(client, "memory") >= memory_before + 2
