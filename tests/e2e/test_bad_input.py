"""Every 400 rule of the submit API (docs/api.md), one test each; a rejected job publishes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.client import Client, example_job


def _visit(**overrides: Any) -> dict[str, Any]:
    return {"store_id": "S00339218", "image_url": ["http://127.0.0.1:1/a.jpg"], "visit_time": "10:00:00",
            **overrides}


CASES: dict[str, tuple[Any, str]] = {
    "not an object": ([1, 2], "body must be a JSON object"),
    "count missing": ({"visits": [_visit()]}, "count:"),
    "count wrong type": ({"count": "1", "visits": [_visit()]}, "count:"),
    "count mismatch": ({"count": 2, "visits": [_visit()]}, "count:"),
    "visits missing": ({"count": 0}, "visits:"),
    "visits empty": ({"count": 0, "visits": []}, "visits:"),
    "visit not object": ({"count": 1, "visits": ["S1"]}, "visits[0]:"),
    "store_id missing": ({"count": 1, "visits": [{"image_url": ["http://a/b"], "visit_time": "10:00"}]},
                         "visits[0].store_id"),
    "store_id empty": ({"count": 1, "visits": [_visit(store_id="  ")]}, "visits[0].store_id"),
    "store_id with NUL": ({"count": 1, "visits": [_visit(store_id="S\u0000")]}, "visits[0].store_id"),
    "image_url bad punycode": ({"count": 1, "visits": [_visit(image_url=["http://xn--a.com/"])]},
                               "visits[0].image_url[0]"),
    "image_url missing": ({"count": 1, "visits": [{"store_id": "S1", "visit_time": "10:00"}]},
                          "visits[0].image_url"),
    "image_url empty": ({"count": 1, "visits": [_visit(image_url=[])]}, "visits[0].image_url"),
    "image_url relative": ({"count": 1, "visits": [_visit(image_url=["/a.jpg"])]}, "visits[0].image_url[0]"),
    "image_url ftp": ({"count": 1, "visits": [_visit(image_url=["ftp://h/a.jpg"])]}, "visits[0].image_url[0]"),
    "image_url not string": ({"count": 1, "visits": [_visit(image_url=[5])]}, "visits[0].image_url[0]"),
    "visit_time missing": ({"count": 1, "visits": [{"store_id": "S1", "image_url": ["http://a/b"]}]},
                           "visits[0].visit_time"),
    "visit_time bad": ({"count": 1, "visits": [_visit(visit_time="25:99")]}, "visits[0].visit_time"),
    "scheduled_time bad": ({"count": 1, "visits": [_visit()], "scheduled_time": "tomorrow"}, "scheduled_time"),
    "scheduled_time type": ({"count": 1, "visits": [_visit()], "scheduled_time": 12}, "scheduled_time"),
    "too many images": ({"count": 1, "visits": [_visit(image_url=["http://a/b"] * 10_001)]}, "visits:"),
    "priority zero": ({"count": 1, "visits": [_visit()], "priority": 0}, "priority:"),
    "priority six": ({"count": 1, "visits": [_visit()], "priority": 6}, "priority:"),
    "priority a string": ({"count": 1, "visits": [_visit()], "priority": "1"}, "priority:"),
    "priority a float": ({"count": 1, "visits": [_visit()], "priority": 2.5}, "priority:"),
    "priority a boolean": ({"count": 1, "visits": [_visit()], "priority": True}, "priority:"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_invalid_body_is_400_naming_the_field_and_publishes_nothing(client: Client, case: str) -> None:
    body, field = CASES[case]
    before = client.topic_end("jobs")
    response = client.submit(body)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(field), response.json()
    assert client.topic_end("jobs") == before


def test_not_json_is_400(client: Client) -> None:
    response = client.http.post(client.ingest + "/processJob", content=b"{not json",
                                headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json() == {"error": "body is not valid JSON"}


def test_deeply_nested_json_is_400(client: Client) -> None:
    response = client.http.post(client.ingest + "/processJob", content=b"[" * 100_000 + b"]" * 100_000,
                                headers={"content-type": "application/json"})
    assert response.status_code in (400, 413)
    assert "error" in response.json()


def test_wrong_content_type_is_415(client: Client) -> None:
    response = client.http.post(client.ingest + "/processJob", content=b"count=1",
                                headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415 and "application/json" in response.json()["error"]


def test_body_over_the_limit_is_413_before_it_is_read(client: Client) -> None:
    huge = b'{"count": 1, "visits": [], "pad": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    before = client.topic_end("jobs")
    response = client.http.post(client.ingest + "/processJob", content=huge,
                                headers={"content-type": "application/json"})
    assert response.status_code == 413 and "limit" in response.json()["error"]
    assert client.topic_end("jobs") == before


def test_ten_thousand_images_at_the_limit_are_accepted_and_one_more_refused(client: Client) -> None:
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()  # held: never downloaded here
    urls = [f"http://127.0.0.1:1/{i}.jpg" for i in range(10_000)]
    at_limit = example_job(client, count=1, scheduled_time=later, visits=[_visit(image_url=urls)])
    response = client.submit(at_limit)
    assert response.status_code == 200, response.text
    assert client.status(response.json()["job_id"]).json()["images"]["total"] == 10_000
    over = example_job(client, count=2, scheduled_time=later,
                       visits=[_visit(image_url=urls), _visit(image_url=["http://127.0.0.1:1/x.jpg"])])
    refused = client.submit(over)
    assert refused.status_code == 400
    assert refused.json()["error"] == "visits: 10001 images exceed the limit of 10000 per job"
