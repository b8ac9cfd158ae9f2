"""Generated requests against the live ingest and status APIs: never a 5xx, and every 4xx
answer is `{"error": "..."}`. Valid-shaped bodies are scheduled months ahead so the fuzzing
creates no processing work."""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.client import Client

LATER = (datetime.now(UTC) + timedelta(days=200)).isoformat()
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "700")), deadline=None,
                suppress_health_check=list(HealthCheck), database=None)
SEEN: Counter[int] = Counter()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
urls = st.one_of(st.just("http://127.0.0.1:1/a.png"), st.text(max_size=30),
                 st.builds(lambda h: f"https://{h}/x.jpg", st.text(min_size=1, max_size=15)))
visits = st.fixed_dictionaries({"store_id": st.one_of(st.text(max_size=70), json_values),
                                "image_url": st.one_of(st.lists(urls, max_size=3), json_values),
                                "visit_time": st.one_of(st.just("10:00"), st.text(max_size=12), json_values)})
shaped = st.builds(lambda c, v, t: {"count": c, "visits": v, "scheduled_time": t},
                   st.one_of(st.integers(-1, 4), json_values), st.lists(visits, max_size=3),
                   st.one_of(st.just(LATER), st.text(max_size=30), json_values))


def _check(response: Any) -> None:
    SEEN[response.status_code // 100] += 1
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str), body


def test_fuzz_submit_with_generated_bodies(client: Client) -> None:
    @FUZZ
    @given(body=st.one_of(shaped, json_values))
    def run(body: Any) -> None:
        _check(client.submit(body))
    run()


def test_fuzz_submit_with_raw_bytes_and_content_types(client: Client) -> None:
    @FUZZ
    @given(raw=st.binary(max_size=200), ctype=st.sampled_from(
        ["application/json", "text/plain", "application/json; charset=utf-8", "", "image/png"]))
    def run(raw: bytes, ctype: str) -> None:
        _check(client.http.post(client.ingest + "/processJob", content=raw, headers={"content-type": ctype}))
    run()


def test_fuzz_status_with_generated_ids(client: Client) -> None:
    @FUZZ
    @given(job=st.one_of(st.uuids().map(str), st.text(max_size=40)), alias=st.booleans())
    def run(job: str, alias: bool) -> None:
        if alias:
            _check(client.http.get(client.status_url + "/api/status", params={"jobid": job}))
        else:
            _check(client.http.get(client.status_url + "/api/status/" + quote(job, safe="")))
    run()


def test_fuzz_report() -> None:
    """Prints the totals for the closing note (runs after the fuzz tests in this module)."""
    print("\nfuzz requests by class:", json.dumps({f"{k}xx": v for k, v in sorted(SEEN.items())}))
    assert SEEN[5] == 0
