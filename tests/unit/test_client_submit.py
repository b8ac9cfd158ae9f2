"""`ImagejobsClient.submit` against a small local server: a dropped connection is retried with
the same Idempotency-Key, and one client's calls share kept-alive connections (a new
connection and TLS context per call cost ~30 ms of CPU: one process could not submit 50 jobs/s)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from typing import Any

from imagejobs_client.client import ImagejobsClient
from tests.unit.test_client_follow import reply_json, serving

JOB = {"count": 1, "visits": [{"store_id": "S1", "image_url": ["http://x/1.png"], "visit_time": "10:00"}]}


class Ingest(BaseHTTPRequestHandler):
    """Answers each submit with a job id per Idempotency-Key; drops the first `drop` requests
    without an answer (a server stopping mid-request). Records (client port, key) per request."""

    protocol_version = "HTTP/1.1"  # keep-alive
    drop = 0
    seen: list[tuple[int, str]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        key = self.headers["Idempotency-Key"]
        type(self).seen.append((self.client_address[1], key))
        if len(self.seen) <= self.drop:
            self.close_connection = True
            return
        reply_json(self, {"job_id": f"job-{key}"})

    def log_message(self, *_: Any) -> None:
        pass


def test_a_dropped_connection_is_retried_with_the_same_key() -> None:
    class Dropping(Ingest):
        drop, seen = 2, []

    with serving(Dropping) as url:
        client = ImagejobsClient(ingest_url=url, timeout_s=5)
        answer = client.submit(JOB, idempotency_key="k1", retry_for_s=10)
        client.close()
    assert answer == {"job_id": "job-k1"}
    assert [key for _, key in Dropping.seen] == ["k1", "k1", "k1"]


def test_one_clients_calls_share_kept_alive_connections() -> None:
    class Counting(Ingest):
        seen = []

    with serving(Counting) as url:
        client = ImagejobsClient(ingest_url=url, timeout_s=5)
        for i in range(20):
            client.submit(JOB, idempotency_key=f"s{i}")
        with ThreadPoolExecutor(4) as pool:  # shared by threads
            answers = list(pool.map(lambda i: client.submit(JOB, idempotency_key=f"t{i}"), range(40)))
        client.close()
    assert answers == [{"job_id": f"job-t{i}"} for i in range(40)]
    ports = [port for port, _ in Counting.seen]
    assert len(ports) == 60
    assert len(set(ports[:20])) == 1, "sequential calls opened more than one connection"
    assert len(set(ports)) <= 5, f"{len(set(ports))} connections for 60 calls from at most 4 threads"
