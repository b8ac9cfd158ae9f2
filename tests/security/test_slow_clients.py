"""Slow and oversized clients at a real ingest (issue 19, item 6; shared/http_guard.py): normal
submits are answered while hundreds of connections trickle their heads and a few stream endless
headers; each hostile connection is answered with its JSON error and cut.

The stack runs with small limits so the deadlines show in seconds: heads within 2 s, bodies
within 2 s, 300 connections per process (headers up to the default 32 KiB)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.bench.slowclients import (
    Answer,
    attack_running,
    connect,
    read_to_close,
    stream_header_until_answered,
    trickle_until_answered,
)
from tests.security.conftest import one_image_job
from tests.support.client import Client
from tests.support.rawhttp import RawConnection
from tests.support.stack import Infra, Stack
from tests.support.waiting import wait_for

MAX_CONNECTIONS = 300
LIMITS = {"HTTP_HEADER_TIMEOUT_S": "2", "HTTP_BODY_TIMEOUT_S": "2", "HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS)}


@pytest.fixture(scope="module")
def slow_client(infra: Infra) -> Iterator[Client]:
    running = Stack(infra, env=LIMITS)
    try:
        yield Client(running, running.start_all(processors=1))
    finally:
        running.stop()


def ingest_pid(client: Client) -> int:
    return next(p.process.pid for p in client.stack.processes if p.name == "ingest")


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def refused(client: Client, reason: str) -> float:
    """ingest's count of connections refused or cut for `reason` (imagejobs_http_refused_total)."""
    for line in httpx.get(client.ingest + "/metrics", timeout=5).text.splitlines():
        if line.startswith(f'imagejobs_http_refused_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_normal_submits_are_answered_while_slow_clients_hold_the_door(slow_client: Client) -> None:
    job = one_image_job(slow_client.image(120, 80))
    pid = ingest_pid(slow_client)
    files_before = open_files(pid)
    cut_before = refused(slow_client, "header_time"), refused(slow_client, "header_size")
    answered: list[float] = []

    def submit_while_attacked() -> bool:
        """One submit on a new connection, answered 200 within 5 s; true once the attack has also
        been cut by both rules (it runs for several head deadlines)."""
        started = time.monotonic()
        response = httpx.post(slow_client.ingest + "/processJob", json=job, timeout=5)
        assert response.status_code == 200, response.text
        answered.append(time.monotonic() - started)
        cut = refused(slow_client, "header_time"), refused(slow_client, "header_size")
        return len(answered) >= 5 and cut[0] >= cut_before[0] + 250 and cut[1] > cut_before[1]

    with attack_running(slow_client.ingest, trickling=250, huge_headers=5, every_s=0.5,
                        header_bytes=1 << 40) as attack:
        wait_for(lambda: open_files(pid) >= files_before + 250, 15, "ingest to hold the attack's connections")
        wait_for(submit_while_attacked, 60, "submits to go through while the attack was cut by both rules")
    assert attack.get("trickle ended 408", 0) >= 250, attack  # what the attackers saw
    assert attack.get("huge ended 431", 0) + attack.get("huge ended reset", 0) > 0, attack
    assert not any(key.startswith("huge ended 2") for key in attack), attack
    # every connection the attack opened was closed and forgotten (a few more files: pools may grow)
    wait_for(lambda: open_files(pid) <= files_before + 10, 15, "ingest to close the attack's connections")


def test_a_huge_header_gets_431_json_after_little_was_sent(slow_client: Client) -> None:
    answer = stream_header_until_answered(slow_client.ingest)
    assert answer.status == 431, answer.raw[:200]
    assert answer.json() == {"error": "request line and headers exceed 32768 bytes"}
    assert answer.headers["content-type"] == "application/json" and answer.headers["connection"] == "close"
    assert answer.sent < 256 * 1024  # the 64 MiB header was cut within a few chunks of the cap


def test_a_trickling_head_gets_408_at_the_deadline(slow_client: Client) -> None:
    answer = trickle_until_answered(slow_client.ingest, every_s=0.5, deadline_s=10)
    assert answer.status == 408, answer.raw[:200]
    assert answer.json() == {"error": "request line and headers not received within 2 s"}
    assert 1.9 <= answer.elapsed_s < 4


def test_a_connection_past_the_cap_gets_503_at_once(slow_client: Client) -> None:
    held = [connect(slow_client.ingest) for _ in range(MAX_CONNECTIONS)]
    try:
        started = time.monotonic()
        with connect(slow_client.ingest) as probe:
            answer = Answer(read_to_close(probe, 5))
        elapsed = time.monotonic() - started
    finally:
        for sock in held:
            sock.close()
    assert answer.status == 503, answer.raw[:200]
    assert answer.json() == {"error": "too many connections; retry shortly"}
    assert answer.headers["retry-after"] == "1" and answer.headers["connection"] == "close"
    assert elapsed < 1  # at once: not the head deadline (2 s)


def test_a_slow_body_gets_408(slow_client: Client) -> None:
    started = time.monotonic()
    with connect(slow_client.ingest) as sock:
        sock.sendall(b"POST /processJob HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"count\": 1, ")
        answer = Answer(read_to_close(sock, 10))
    assert answer.status == 408, answer.raw[:200]
    assert answer.json() == {"error": "request body not received within 2 s"}
    assert 1.9 <= time.monotonic() - started < 4


def test_kept_alive_connections_still_serve_request_after_request(slow_client: Client) -> None:
    job = one_image_job(slow_client.image(64, 48))

    async def on_one_connection() -> list[int]:
        connection = await RawConnection.open(slow_client.ingest)
        try:
            statuses = []
            for path, body in [("/healthz", None), ("/processJob", job)] * 3:
                status, _ = await connection.request("GET" if body is None else "POST", path, body)
                statuses.append(status)
            return statuses
        finally:
            await connection.close()

    assert asyncio.run(on_one_connection()) == [200] * 6

