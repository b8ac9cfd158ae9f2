"""`ImagejobsClient.follow` (what `imagejobs watch` runs) against small local servers: it
resumes a dropped stream with Last-Event-ID, and polls a server that has no stream."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from imagejobs_client.client import ImagejobsClient


def status(state: str, done: int) -> dict[str, Any]:
    return {"job_id": "j", "status": state, "images": {"total": 2, "succeeded": done, "failed": 0}}


STATUSES = [status("scheduled", 0), status("ongoing", 1), status("completed", 2)]


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def reply_json(handler: BaseHTTPRequestHandler, answer: Any) -> None:
    body = json.dumps(answer).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def test_a_dropped_stream_is_resumed_with_the_last_event_id() -> None:
    asked: list[str | None] = []

    class Streams(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            last = self.headers.get("Last-Event-ID")
            asked.append(last)
            start = 0 if last is None else int(last) + 1
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            # the first connection sends one event and a heartbeat, then drops
            for i in range(start, 1 if last is None else len(STATUSES)):
                self.wfile.write(f": ping\n\nid: {i}\nevent: status\ndata: {json.dumps(STATUSES[i])}\n\n".encode())
            self.wfile.flush()

        def log_message(self, *_: Any) -> None:
            pass

    with serving(Streams) as url:
        seen = list(ImagejobsClient(status_url=url, timeout_s=5).follow("j"))
    assert seen == STATUSES
    assert asked == [None, "0"]


def test_a_server_without_streams_is_polled() -> None:
    polls: list[int] = []

    class Older(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if not self.path.startswith("/api/status/"):
                self.send_error(404)
                return
            polls.append(1)
            reply_json(self, STATUSES[min(len(polls) - 1, 2)])

        def log_message(self, *_: Any) -> None:
            pass

    with serving(Older) as url:
        seen = list(ImagejobsClient(status_url=url, timeout_s=5).follow("j", every_s=0.01))
    assert seen == STATUSES and len(polls) == 3
