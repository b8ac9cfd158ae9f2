"""Front-door hygiene for every HTTP server (wired in by shared/serve.py): a cap on connections,
on the size of a request's head, deadlines for the head and the body, and one for a response
the client has stopped reading, enforced inside uvicorn's httptools protocol.

Why in the protocol and not in a middleware: an ASGI app first sees a request once its head is
complete, too late for the first four, and never sees the transport's write buffer. And uvicorn
(0.55) enforces none of them: with 1,500 connections trickling a header byte every 5 s and 20
clients sending 64 MiB headers, ingest answered none of five normal submits within 5 s.
httptools appends every chunk of a header to the header so far, so one 64 MiB header costs
gigabytes of copying; a connection that never finishes its head is held for ever.

Per process, from CommonSettings (HTTP_MAX_CONNECTIONS, HTTP_MAX_HEADER_BYTES,
HTTP_HEADER_TIMEOUT_S, HTTP_BODY_TIMEOUT_S, HTTP_SEND_TIMEOUT_S):
- a connection past the cap gets `503` at once, before anything is read;
- a head (request line and headers) larger than the cap gets `431`, whether it trickles in or
  arrives whole in one read;
- a head must arrive within the header deadline of the connection's start, or on a kept-alive
  connection of the end of the previous response, however busily it trickles, else `408` (a
  kept-alive connection that sends nothing is closed by uvicorn's keep-alive timeout, 5 s, and a
  head that arrives whole in one read is served);
- a body must arrive within the body deadline of the end of its head, else `408` (or, once the
  response has started, the connection is just closed);
- a response whose client has stopped reading it (the socket's buffers full: the transport
  paused writing) for the send deadline is cut: the connection is aborted, which ends what was
  sending it like a client that left (a progress stream unsubscribes). uvicorn would wait for
  ever, holding the response and the memory it buffered. The deadline starts only once the
  kernel's and the transport's buffers are full, so a slow stream (a few hundred bytes a
  second) may be held far longer than the deadline after its client stopped reading; its
  memory is bounded by those buffers all the while.
Each refusal but the last is `{"error": ...}` JSON, like the rest of the API, and closes the
connection; the last has nobody reading, and is cut without an answer.
"""

from __future__ import annotations

import json
import logging
from asyncio import BaseTransport, TimerHandle, Transport
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from prometheus_client import Counter
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from shared.settings import CommonSettings

log = logging.getLogger(__name__)

REFUSED = Counter("imagejobs_http_refused_total", "HTTP connections refused or cut by the front-door limits",
                  ["reason"])
REASONS = ("connections", "header_size", "header_time", "body_time", "send_time")
REFUSED_BY = {reason: REFUSED.labels(reason) for reason in REASONS}


class HeadTooLarge(Exception):  # noqa: N818 - raised inside the parser's callback to stop it
    """A complete request head over HTTP_MAX_HEADER_BYTES."""


@dataclass(frozen=True)
class HttpLimits:
    """The limits of shared/http_guard.py, per process."""

    max_connections: int = 2048
    max_header_bytes: int = 32 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    send_timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> HttpLimits:
        return cls(settings.http_max_connections, settings.http_max_header_bytes,
                   settings.http_header_timeout_s, settings.http_body_timeout_s, settings.http_send_timeout_s)


def error_response(status: int, message: str, default_headers: list[tuple[bytes, bytes]],
                   retry_after: bool = False) -> bytes:
    """A complete `{"error": message}` response that closes the connection."""
    body = json.dumps({"error": message}).encode()
    head = [STATUS_LINE[status]]
    head += [name + b": " + value + b"\r\n" for name, value in default_headers]
    head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n" % len(body))
    if retry_after:
        head.append(b"retry-after: 1\r\n")
    head.append(b"\r\n")
    return b"".join(head) + body


def guarded_protocol(limits: HttpLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class to pass to uvicorn as `http=`, bound to `limits` (uvicorn builds the
    protocol itself, one per connection, so the limits travel on the class)."""
    bound = limits

    class BoundGuardedHttpToolsProtocol(GuardedHttpToolsProtocol):
        limits = bound

    return BoundGuardedHttpToolsProtocol


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above. State per connection: whether the
    parser is inside a request head (`_in_head`: from the end of the previous message to the
    end of the headers), the bytes received while it was, one head or body deadline timer at
    most, one send-stall timer at most, and the request whose app is running."""

    limits: ClassVar[HttpLimits] = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_head = self.limits.max_header_bytes
        self._in_head = True
        self._head_bytes = 0
        self._head_size = 0  # the request line and headers parsed so far (a head that came whole)
        self._oversized = False
        self._head_since = 0.0  # when the current head's clock started (loop time)
        self._deadline: TimerHandle | None = None
        self._stalled: TimerHandle | None = None  # the client stopped reading: cut it then
        self._running: RequestResponseCycle | None = None  # the request whose app runs now

    # Connection
    def connection_made(self, transport: BaseTransport) -> None:
        # uvicorn's protocol takes an asyncio.Transport; uvloop's transports act as one without the class
        stream = cast(Transport, transport)
        if len(self.connections) >= self.limits.max_connections:
            self._turn_away(stream)
            return
        super().connection_made(stream)
        self._head_since = self.loop.time()
        self._arm(self._head_since + self.limits.header_timeout_s, self._head_too_slow)

    def _turn_away(self, transport: Transport) -> None:
        """503 without reading anything: the connection never joins `connections`."""
        REFUSED_BY["connections"].inc()
        self.transport = transport
        self._in_head = False
        transport.write(error_response(503, "too many connections; retry shortly",
                                       self.server_state.default_headers, retry_after=True))
        transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self._cancel_stall()
        super().connection_lost(exc)
        running = self._running
        if running is not None and running is not self.cycle and not running.response_complete:
            # A request came behind the one still being answered (pipelined): uvicorn tells only
            # the newest that the client left, and the running app (a progress stream) would
            # wait for ever for its `http.disconnect`.
            running.disconnected = True
            running.message_event.set()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        self._running = cycle
        HttpToolsProtocol._start_asgi_task(self, cycle, app)

    # Writing: the transport pauses the protocol when its buffer is full (the client is not
    # reading) and resumes it once the buffer has drained
    def pause_writing(self) -> None:
        HttpToolsProtocol.pause_writing(self)
        if self._stalled is None:
            self._stalled = self.loop.call_later(self.limits.send_timeout_s, self._send_too_slow)

    def resume_writing(self) -> None:
        self._cancel_stall()
        HttpToolsProtocol.resume_writing(self)

    def _cancel_stall(self) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def _send_too_slow(self) -> None:
        self._stalled = None
        REFUSED_BY["send_time"].inc()
        log.info("cut a connection from %s: its response waited %g s for the client to read (buffers full)",
                 self.client, self.limits.send_timeout_s)
        self.transport.abort()  # close() would wait to flush a buffer nobody reads

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        # The connection is the WebSocket protocol's now: none of these limits applies to it
        self._cancel_deadline()
        self._cancel_stall()
        self._in_head, self._head_bytes = True, 0

    # The hot path: an integer add and a compare per chunk while a head is incomplete. The base
    # class's methods are called by name: `super()` would build an object per call (Python 3.11).
    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        HttpToolsProtocol.data_received(self, data)
        if self._in_head:  # this chunk ended inside a head
            if self._head_bytes > self._max_head:
                self._head_too_large()
            elif self._deadline is None and self._head_bytes and self._idle():
                self._arm(self._head_since + self.limits.header_timeout_s, self._head_too_slow)
        elif self._deadline is None:  # this chunk ended inside a body
            self._arm(self.loop.time() + self.limits.body_timeout_s, self._body_too_slow)

    # Parser callbacks (called from within super().data_received)
    def on_message_begin(self) -> None:
        self._head_size = 0
        HttpToolsProtocol.on_message_begin(self)

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        HttpToolsProtocol.on_url(self, url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        HttpToolsProtocol.on_header(self, name, value)

    def on_headers_complete(self) -> None:
        if self._head_size > self._max_head:  # a head over the cap that came in one read
            self._oversized = True
            raise HeadTooLarge()  # stops the parser: the app never sees the request
        self._in_head = False
        if self._deadline is not None:
            self._cancel_deadline()
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        # Bytes after the end of a message in the same chunk go uncounted: the count can lag
        # by at most one chunk, and a body never counts as head.
        self._in_head = True
        self._head_bytes = 0
        if self._deadline is not None:
            self._cancel_deadline()
        HttpToolsProtocol.on_message_complete(self)

    def on_response_complete(self) -> None:
        HttpToolsProtocol.on_response_complete(self)
        if self.cycle.response_complete and not self.transport.is_closing():
            # Nothing in flight: the next head's clock starts now. The timer is armed only once
            # some of that head is here; an idle kept-alive connection is uvicorn's keep-alive
            # timeout's to close.
            self._head_since = self.loop.time()
            if self._in_head and self._head_bytes and self._deadline is None:
                self._arm(self._head_since + self.limits.header_timeout_s, self._head_too_slow)

    def send_400_response(self, msg: str) -> None:
        """The parser stopped: for a head over the cap, with a 431 (uvicorn's own 400 else)."""
        if self._oversized:
            self._head_too_large()
            return
        HttpToolsProtocol.send_400_response(self, msg)

    # Refusals
    def _head_too_large(self) -> None:
        self._refuse("header_size", 431, f"request line and headers exceed {self._max_head} bytes",
                     answer=self._idle())

    def _head_too_slow(self) -> None:
        self._deadline = None
        self._refuse("header_time", 408,
                     f"request line and headers not received within {self.limits.header_timeout_s:g} s",
                     answer=self._idle())

    def _body_too_slow(self) -> None:
        self._deadline = None
        # A request queued behind another (pipelined) or already answered cannot be answered
        # again on this connection: only close it then.
        answer = not self.pipeline and not self.cycle.response_started
        if answer:
            self.cycle.disconnected = True  # the app's own answer, if any, is not written after ours
        self._refuse("body_time", 408, f"request body not received within {self.limits.body_timeout_s:g} s",
                     answer=answer)

    def _refuse(self, reason: str, status: int, message: str, answer: bool) -> None:
        """Answer `status` (unless another response is in flight: it would be cut into) and close."""
        self._cancel_deadline()
        if self.transport.is_closing():
            return
        REFUSED_BY[reason].inc()
        log.debug("%s from %s: %s", status, self.client, message)
        if answer:
            self.transport.write(error_response(status, message, self.server_state.default_headers))
        self.transport.close()

    def _idle(self) -> bool:
        """No request of this connection is being answered or waiting to be."""
        return self.cycle is None or self.cycle.response_complete

    # The one deadline timer
    def _arm(self, when: float, callback: Callable[[], None]) -> None:
        self._deadline = self.loop.call_at(when, callback)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
