"""The HTTP response of a progress stream (`GET /api/jobs/{job_id}/events`): Server-Sent Events
from one coroutine per stream.

sse-starlette still writes the protocol (`ServerSentEvent` encodes each event and the heartbeat
comment); its `EventSourceResponse` no longer serves the stream. That response runs four tasks
per stream in an anyio task group (the events, a ping loop, a shutdown watcher, a disconnect
listener) and times every send with an anyio cancel scope; when a stream ends, the group
cancels the three others, and anyio's `task_done` keeps each CancelledError in a local of its
own frame, a reference cycle that holds the task, its frames and the response (~106 objects
per stream) until the garbage collector finds it. With 2,000 streams ending in `make bench`'s
burst, that was ~0.2 s of collections and as much again in the teardown, on the status process
while it folds the burst's last results (sse-starlette 3.7.1, anyio 4.16; measured with
`gc.callbacks` and py-spy). Served from one coroutine, 2,000 streams of five events each cost
the server half the CPU (0.24 s against 0.47-0.49 s) and leave no cyclic garbage.

What the library's response did, and where it is now:
- heartbeats: a timer per stream wakes its coroutine (`progress.Watch.beat_every`);
- the client leaving: a small task reads the request's `receive` until `http.disconnect`,
  then closes the stream. It ends on its own when the response ends (the server answers
  `http.disconnect` once the response is complete), so no task is cancelled;
- a client that stops reading: the front door cuts any response the client has not read for
  HTTP_SEND_TIMEOUT_S (shared/http_guard.py), which ends the stream like a disconnect;
- server shutdown: `ProgressHub.drain`, called when the server starts shutting down
  (shared/serve.py), ends every stream with a complete response.
"""

from __future__ import annotations

import asyncio
import json

from sse_starlette import ServerSentEvent
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from services.status.handlers.progress import Opened

HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-store"),
           (b"connection", b"keep-alive"), (b"x-accel-buffering", b"no")]  # sse-starlette's, so proxies do not buffer
PING = ServerSentEvent(comment="ping").encode()
END: Message = {"type": "http.response.body", "body": b"", "more_body": False}
RETRY_MS = 1000  # how soon a client that lost the stream reconnects


def encoded(event_id: str, status_json: str) -> bytes:
    return ServerSentEvent(data=status_json, event="status", id=event_id, retry=RETRY_MS).encode()


class ProgressStreamResponse(Response):
    """The ASGI response serving `opened`: each status as an `event: status` (the JSON of
    `GET /api/status/{id}`), a `: ping` comment for each heartbeat, then the end of the body.
    A starlette Response so FastAPI sends it as it is; it writes its own head and body, and has
    no background task (the route takes none)."""

    def __init__(self, opened: Opened) -> None:  # noqa: D107 - Response's body and headers are not used
        self._opened = opened
        self.status_code = 200
        self.background: BackgroundTask | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        events = self._opened.events  # the route is GET only (a HEAD is 405): the stream always starts
        # It ends by itself once the response is complete (the server then answers `receive`
        # with `http.disconnect`, ASGI's rule); it is cancelled only when the stream failed (a
        # send raised, or the request's task was cancelled at a hard shutdown).
        gone = asyncio.get_running_loop().create_task(self._close_when_gone(receive))
        try:
            async for event in events:
                if event is None:
                    body = PING
                else:
                    event_id, status = event
                    body = encoded(event_id, json.dumps(status.model_dump(), separators=(",", ":")))
                await send({"type": "http.response.body", "body": body, "more_body": True})
            await send(END)
        except BaseException:
            gone.cancel()
            raise
        finally:
            await events.aclose()  # a failed send leaves the generator at a yield: unsubscribe it

    async def _close_when_gone(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass  # a request body, which a GET has no use for
        self._opened.close()
