"""The front-door guard (shared/http_guard.py) on a real uvicorn server in this process, with
limits small enough that each rule shows within a second. Clients are blocking sockets in a
thread (the server runs on the test's event loop)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, BinaryIO, TypeVar

import pytest
import uvicorn

from deploy.devstack.net import free_port
from shared.http_guard import REFUSED_BY, GuardedHttpToolsProtocol, HttpLimits, error_response, guarded_protocol
from tests.bench.slowclients import (
    TRICKLE_HEAD,
    Answer,
    connect,
    read_to_close,
    stream_header_until_answered,
    trickle_until_answered,
)
from tests.support.waiting import wait_for

LIMITS = HttpLimits(max_connections=8, max_header_bytes=1024, header_timeout_s=0.5, body_timeout_s=0.5,
                    send_timeout_s=0.5)
T = TypeVar("T")
SEEN: list[GuardedHttpToolsProtocol] = []


class Recorded(guarded_protocol(LIMITS)):  # type: ignore[misc]
    """The guarded protocol, remembering each connection's protocol so tests can inspect it,
    and when its writing last paused (loop time)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.paused_at: float | None = None
        SEEN.append(self)

    def pause_writing(self) -> None:
        self.paused_at = self.loop.time()
        super().pause_writing()


PATHS: list[str] = []  # the requests the app saw
ENDLESS: list[float] = []  # when each endless response saw its client gone (loop time)


async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """Reads the whole body and answers its size, except on /early, which answers at once, and
    on /endless, which sends 64 KiB chunks until the client is gone."""
    PATHS.append(scope["path"])
    if scope["path"] == "/endless":
        await endless(receive, send)
        return
    size, more = 0, scope["path"] != "/early"
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size, more = size + len(message.get("body", b"")), message.get("more_body", False)
    body = json.dumps({"bytes": size}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def endless(receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    gone = asyncio.Event()

    async def listen() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()
    listening = asyncio.create_task(listen())
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    while not gone.is_set():
        await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
        await asyncio.sleep(0)
    ENDLESS.append(asyncio.get_running_loop().time())
    await listening


@pytest.fixture
async def url() -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=Recorded, log_config=None,
                                           lifespan="off", access_log=False))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    SEEN.clear()
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await serving


async def off_loop(call: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(call, *args)


def request(path: str = "/", body: bytes = b"", extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n%s" % (path.encode(), len(body), extra, body)


def read_response(stream: BinaryIO) -> tuple[int, Any]:
    """One response (status, JSON body) off a kept-alive connection (`socket.makefile("rb")`)."""
    status = int(stream.readline().split()[1])
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, json.loads(stream.read(length))


def served(url: str) -> bool:
    with connect(url) as sock:
        sock.sendall(request())
        return read_response(sock.makefile("rb"))[0] == 200


def test_an_error_response_is_json_that_closes_the_connection() -> None:
    raw = error_response(431, "too big", [(b"server", b"uvicorn")], retry_after=True)
    answer = Answer(raw)
    assert answer.status == 431 and answer.json() == {"error": "too big"}
    assert answer.headers == {"server": "uvicorn", "content-type": "application/json", "connection": "close",
                              "content-length": str(len(b'{"error": "too big"}')), "retry-after": "1"}


async def test_kept_alive_and_pipelined_requests_are_answered(url: str) -> None:
    def exchange() -> list[tuple[int, Any]]:
        with connect(url) as sock, sock.makefile("rb") as stream:
            answers = []
            for size in (0, 10, 2000):
                sock.sendall(request(body=b"x" * size))
                answers.append(read_response(stream))
            time.sleep(0.3)  # idle, but within the head deadline of the last response's end
            sock.sendall(request(body=b"abc") + request(body=b"de") + request())  # pipelined
            return answers + [read_response(stream) for _ in range(3)]
    assert await off_loop(exchange) == [(200, {"bytes": n}) for n in (0, 10, 2000, 3, 2, 0)]


async def test_a_body_sent_with_its_head_never_counts_as_head(url: str) -> None:
    padding = b"X-Pad: " + b"p" * 900 + b"\r\n"  # the head just under 1,024 bytes, the body 64 KiB

    def exchange() -> tuple[int, Any]:
        with connect(url) as sock:
            sock.sendall(request(body=b"b" * 65536, extra=padding))
            return read_response(sock.makefile("rb"))
    assert await off_loop(exchange) == (200, {"bytes": 65536})


async def test_a_head_over_the_cap_gets_431_after_little_was_sent(url: str) -> None:
    answer = await off_loop(stream_header_until_answered, url, 1 << 20, 256)
    assert answer.status == 431, answer.raw
    assert answer.json() == {"error": "request line and headers exceed 1024 bytes"}
    assert answer.headers["content-type"] == "application/json" and answer.headers["connection"] == "close"
    assert answer.sent < 8192


async def test_a_trickled_head_gets_408_at_the_deadline_however_busy(url: str) -> None:
    answer = await off_loop(trickle_until_answered, url, 0.02, 5.0)
    assert answer.status == 408 and "not received within 0.5 s" in answer.json()["error"]
    assert 0.45 <= answer.elapsed_s < 1.5


async def test_the_next_head_on_a_kept_alive_connection_is_timed_from_the_last_response(url: str) -> None:
    def exchange() -> tuple[float, Answer]:
        with connect(url) as sock:
            time.sleep(0.3)  # most of the first head's time: the second head's clock starts afresh
            sock.sendall(request())
            read_response(sock.makefile("rb"))
            answered = time.monotonic()
            sock.sendall(TRICKLE_HEAD)
            return answered, Answer(read_to_close(sock, 5))
    answered, answer = await off_loop(exchange)
    assert answer.status == 408
    assert 0.45 <= time.monotonic() - answered < 1.5


async def test_a_slow_body_gets_408(url: str) -> None:
    def exchange() -> tuple[Answer, float]:
        started = time.monotonic()
        with connect(url) as sock:
            sock.sendall(request(body=b"x" * 100)[:-90])
            return Answer(read_to_close(sock, 5)), time.monotonic() - started
    answer, elapsed = await off_loop(exchange)
    assert answer.status == 408 and answer.json() == {"error": "request body not received within 0.5 s"}
    assert 0.45 <= elapsed < 1.5


async def test_a_body_still_coming_after_the_answer_is_cut_without_a_second_answer(url: str) -> None:
    def exchange() -> tuple[bytes, float]:
        started = time.monotonic()
        with connect(url) as sock:
            sock.sendall(request("/early", body=b"x" * 100)[:-90])
            return read_to_close(sock, 5), time.monotonic() - started
    raw, elapsed = await off_loop(exchange)
    assert raw.count(b"HTTP/1.1") == 1 and Answer(raw).status == 200
    assert elapsed < 1.5


async def test_a_connection_past_the_cap_gets_503_at_once(url: str) -> None:
    def exchange() -> tuple[list[Answer], float]:
        held = [connect(url) for _ in range(LIMITS.max_connections)]
        started = time.monotonic()
        try:
            with connect(url) as quiet, connect(url) as eager:
                eager.sendall(request())  # a client that sends at once still reads the 503
                answers = [Answer(read_to_close(quiet, 5)), Answer(read_to_close(eager, 5))]
                return answers, time.monotonic() - started
        finally:
            for sock in held:
                sock.close()
    answers, elapsed = await off_loop(exchange)
    for answer in answers:
        assert answer.status == 503 and answer.json() == {"error": "too many connections; retry shortly"}
        assert answer.headers["retry-after"] == "1" and answer.headers["connection"] == "close"
    assert elapsed < 0.3  # well before any head deadline

    assert await off_loop(wait_for, lambda: served(url), 5, "a connection to be served once the others closed")


async def test_deadlines_are_cancelled_when_the_client_goes_away(url: str) -> None:
    def leave_midway() -> list[Any]:
        armed = []
        for i, partial in enumerate((TRICKLE_HEAD, request(body=b"x" * 100)[:-50])):  # in the head, in the body
            with connect(url) as sock:
                sock.sendall(partial)
                armed.append(wait_for(lambda: len(SEEN) > i and SEEN[i]._deadline, 5,  # noqa: B023
                                      "the deadline to be armed"))
        return armed
    armed = await off_loop(leave_midway)
    await off_loop(wait_for, lambda: all(p._deadline is None for p in SEEN), 5, "every deadline to be dropped")
    assert len(armed) == 2 and all(timer.cancelled() for timer in armed)



def ask_endless_and_read_nothing(url: str, until: Callable[[], T | None], what: str) -> T:
    """GET /endless with a small receive buffer, read nothing until `until()`, then close."""
    with connect(url) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /endless HTTP/1.1\r\nHost: t\r\n\r\n")
        return wait_for(until, 5, what)


async def test_a_response_the_client_stops_reading_is_cut_at_the_send_deadline(url: str) -> None:
    """The client reads nothing: once the socket's buffers are full the response stalls, and
    after the send deadline the connection is aborted, so the app sees its client gone."""
    ENDLESS.clear()
    cut_before = REFUSED_BY["send_time"]._value.get()

    await off_loop(ask_endless_and_read_nothing, url, lambda: ENDLESS, "the app to see its client gone")
    assert SEEN[0].paused_at is not None
    assert 0.45 <= ENDLESS[0] - SEEN[0].paused_at < 1.5  # the last pause lasted the deadline, then the cut
    assert REFUSED_BY["send_time"]._value.get() == cut_before + 1
    assert SEEN[0]._stalled is None


async def test_a_client_that_leaves_while_its_response_stalls_drops_the_stall_timer(url: str) -> None:
    ENDLESS.clear()
    cut_before = REFUSED_BY["send_time"]._value.get()

    timer = await off_loop(ask_endless_and_read_nothing, url, lambda: SEEN and SEEN[0]._stalled,
                           "the response to stall")  # then the client leaves, inside the deadline
    await off_loop(wait_for, lambda: ENDLESS, 5, "the app to see its client gone")
    assert timer.cancelled() and SEEN[0]._stalled is None
    assert REFUSED_BY["send_time"]._value.get() == cut_before


async def test_a_slow_reader_that_keeps_reading_is_never_cut(url: str) -> None:
    """Each stall shorter than the deadline is forgiven: the deadline is per stall, not per response."""
    ENDLESS.clear()
    cut_before = REFUSED_BY["send_time"]._value.get()

    def read_slowly() -> tuple[list[int], int]:
        reads, stalls = [], 0
        with connect(url) as sock:
            sock.sendall(b"GET /endless HTTP/1.1\r\nHost: t\r\n\r\n")
            sock.settimeout(0.05)
            for _ in range(8):  # eight stalls of 0.15 s: 1.2 s, over twice the deadline in all
                time.sleep(0.15)  # the buffers fill meanwhile: the response stalls
                stalls += bool(SEEN and SEEN[0]._stalled)
                got, until = 0, time.monotonic() + 0.05
                with contextlib.suppress(TimeoutError):  # then read all that comes for 50 ms
                    while time.monotonic() < until and (chunk := sock.recv(1 << 22)):
                        got += len(chunk)
                reads.append(got)
        return reads, stalls
    reads, stalls = await off_loop(read_slowly)
    assert stalls >= 6 and all(reads), (reads, stalls)  # it stalled again and again, and was never cut
    await off_loop(wait_for, lambda: ENDLESS, 5, "the app to see its client gone once it closed")
    assert REFUSED_BY["send_time"]._value.get() == cut_before


async def test_a_whole_head_over_the_cap_in_one_read_gets_431_and_the_app_never_sees_it(url: str) -> None:
    """Caught as the parser completes the head, not only while a head streams in."""
    def whole_head(size: int) -> Answer:
        with connect(url) as sock:
            sock.sendall(request("/whole", extra=b"x-big: " + b"a" * size + b"\r\n"))
            return Answer(read_to_close(sock, 5))
    PATHS.clear()
    refused = await off_loop(whole_head, 1500)
    assert refused.status == 431 and "exceed 1024 bytes" in refused.json()["error"]
    assert PATHS == []  # the request never reached the app
    assert (await off_loop(whole_head, 500)).status == 200 and PATHS == ["/whole"]
