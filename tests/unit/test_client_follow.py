"""`ImagejobsClient.follow` (what `imagejobs watch` runs) against small local servers: it
resumes a dropped stream with Last-Event-ID, polls a server that has no stream, asks again
after a 503 (a status service restarting) whether streaming or polling, and gives up at once
on an error that asking again does not cure."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from imagejobs_client.client import ApiError, ImagejobsClient


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


class Quiet(BaseHTTPRequestHandler):
    """A test server's handler that logs nothing."""

    def log_message(self, *_: Any) -> None:
        pass


def reply_json(handler: BaseHTTPRequestHandler, answer: Any, code: int = 200) -> None:
    body = json.dumps(answer).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    if code == 503:
        handler.send_header("Retry-After", "0")
    handler.end_headers()
    handler.wfile.write(body)


def reply_error(handler: BaseHTTPRequestHandler, code: int, message: str) -> None:
    reply_json(handler, {"error": message}, code)


def stream_all(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.end_headers()
    for i, state in enumerate(STATUSES):
        handler.wfile.write(f"id: {i}\nevent: status\ndata: {json.dumps(state)}\n\n".encode())
    handler.wfile.flush()


def test_a_dropped_stream_is_resumed_with_the_last_event_id() -> None:
    asked: list[str | None] = []

    class Streams(Quiet):
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

    with serving(Streams) as url:
        seen = list(ImagejobsClient(status_url=url, timeout_s=5).follow("j"))
    assert seen == STATUSES
    assert asked == [None, "0"]


def without_streams(answer: Callable[[BaseHTTPRequestHandler, int], None]
                    ) -> tuple[type[BaseHTTPRequestHandler], list[int]]:
    """An older status service's handler: no progress stream (404), only `GET /api/status/{id}`,
    its n-th poll (from 1) answered by `answer(handler, n)`; and the list the polls are counted in."""
    polls: list[int] = []

    class Older(Quiet):
        def do_GET(self) -> None:  # noqa: N802
            if not self.path.startswith("/api/status/"):
                self.send_error(404)
                return
            polls.append(1)
            answer(self, len(polls))

    return Older, polls


def test_a_server_without_streams_is_polled() -> None:
    older, polls = without_streams(lambda handler, n: reply_json(handler, STATUSES[min(n - 1, 2)]))
    with serving(older) as url:
        seen = list(ImagejobsClient(status_url=url, timeout_s=5).follow("j", every_s=0.01))
    assert seen == STATUSES and len(polls) == 3


def test_a_503_while_following_is_asked_again() -> None:
    """What a restarted status service answers before it has connected to Kafka and PostgreSQL."""
    asked: list[str] = []

    class Starting(Quiet):
        def do_GET(self) -> None:  # noqa: N802
            asked.append(self.path)
            if len(asked) == 1:
                reply_error(self, 503, "not connected yet; retry shortly")
            else:
                stream_all(self)

    with serving(Starting) as url:
        seen = list(ImagejobsClient(status_url=url, timeout_s=5).follow("j"))
    assert seen == STATUSES
    assert asked == ["/api/jobs/j/events"] * 2


def test_a_503_while_polling_is_asked_again() -> None:
    def restarting(handler: BaseHTTPRequestHandler, n: int) -> None:
        if n == 2:
            reply_error(handler, 503, "not connected yet; retry shortly")
            return
        reply_json(handler, STATUSES[min(n - 2, 2)] if n > 2 else STATUSES[0])

    older, polls = without_streams(restarting)
    with serving(older) as url:
        seen = list(ImagejobsClient(status_url=url, timeout_s=5).follow("j", every_s=0.01))
    assert seen == STATUSES and len(polls) == 4  # the third poll asked again after the 503


def test_an_error_asking_again_does_not_cure_ends_the_follow() -> None:
    asked: list[str] = []

    class Refusing(Quiet):
        def do_GET(self) -> None:  # noqa: N802
            asked.append(self.path)
            reply_error(self, 401, "unknown API key")

    with serving(Refusing) as url, pytest.raises(ApiError, match="401: unknown API key"):
        list(ImagejobsClient(status_url=url, timeout_s=5).follow("j"))
    assert asked == ["/api/jobs/j/events"]
