"""Hostile images fail their own image with a clear reason; the processor stays healthy."""

from __future__ import annotations

import httpx
import pytest

from tests.security.conftest import one_image_job
from tests.support.client import Client


@pytest.mark.parametrize(("path", "reason"), [
    ("/bomb.png", "image too large"),
    ("/truncated.jpg", "corrupt or truncated image"),
    ("/garbage.jpg", "not an image"),
    ("/dribble.png", "download timed out"),
])
def test_hostile_image_fails_with_a_reason(hostile_client: Client, path: str, reason: str) -> None:
    final = hostile_client.wait_final(hostile_client.submit_ok(one_image_job(hostile_client.images + path)))
    assert final["status"] == "failed"
    assert final["error"][0]["error"].startswith(reason), final
    _assert_processor_healthy(hostile_client)


def test_download_stops_at_the_byte_cap(hostile_client: Client) -> None:
    total = 50 * 1024 * 1024
    job_id = hostile_client.submit_ok(one_image_job(f"{hostile_client.images}/big/{total}.png"))
    final = hostile_client.wait_final(job_id)
    assert final["error"][0]["error"] == "image too large: more than 1000000 bytes"
    sent = hostile_client.http.get(hostile_client.images + "/_stats").json()["big-bytes-sent"]
    assert sent < 8 * 1024 * 1024, sent  # stopped near the 1 MB cap (plus socket buffers), not 50 MB
    _assert_processor_healthy(hostile_client)


def _assert_processor_healthy(client: Client) -> None:
    processor = next(p for p in client.stack.processes if p.name == "processor")
    assert processor.process.poll() is None
    assert httpx.get(processor.url + "/readyz", timeout=5).status_code == 200
