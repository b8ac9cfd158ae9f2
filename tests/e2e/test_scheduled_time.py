"""`scheduled_time` resolves to the right UTC instant, and is reported in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support.client import Client, example_job

TOMORROW = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize(("given", "expected"), [
    (f"{TOMORROW}T10:57:00+05:30", f"{TOMORROW}T05:27:00+00:00"),
    (f"{TOMORROW}T10:57:00Z", f"{TOMORROW}T10:57:00+00:00"),
    (f"{TOMORROW}T10:57:00", f"{TOMORROW}T05:27:00+00:00"),  # naive: Asia/Kolkata
    (f"{TOMORROW}T10:57:00-04:00", f"{TOMORROW}T14:57:00+00:00"),
])
def test_future_times_resolve_to_their_instant(client: Client, given: str, expected: str) -> None:
    response = client.submit(example_job(client, scheduled_time=given))
    assert response.status_code == 200, response.text
    assert response.json()["scheduled_time"].endswith("Z")
    assert _utc(response.json()["scheduled_time"]) == datetime.fromisoformat(expected)
    status = client.status(response.json()["job_id"]).json()
    assert _utc(status["scheduled_time"]) == datetime.fromisoformat(expected)
    assert status["status"] == "scheduled"


@pytest.mark.parametrize("given", [None, "2020-01-01T00:00:00+05:30", "2001-02-03T04:05:06"])
def test_absent_or_past_means_now(client: Client, given: str | None) -> None:
    before = datetime.now(UTC)
    body = example_job(client) if given is None else example_job(client, scheduled_time=given)
    response = client.submit(body)
    after = datetime.now(UTC)
    assert response.status_code == 200, response.text
    assert before - timedelta(seconds=1) <= _utc(response.json()["scheduled_time"]) <= after
    assert client.wait_final(response.json()["job_id"])["status"] == "completed"
