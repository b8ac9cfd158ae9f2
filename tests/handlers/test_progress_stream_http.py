"""Progress streams over HTTP (services/status/sse.py): the status app over the fakes of
tests/handlers/fakes_status.py, served by a real uvicorn server in this process with the front
door's protocol and the draining server of shared/serve.py, read by raw HTTP clients: the bytes
on the wire, a client that leaves, heartbeats, the server draining, and what a finished stream
leaves for the garbage collector."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
import uvicorn

from deploy.devstack.net import free_port
from services.status.app import create_app
from services.status.bootstrap import StatusUseCases
from services.status.handlers.commands import Decisions, JobCommands
from services.status.handlers.progress import JobProgress, ProgressHub
from services.status.handlers.webhooks import WebhookReader
from services.status.settings import StatusSettings
from shared.auth import parse_api_keys
from shared.http_guard import HttpLimits, guarded_protocol
from shared.serve import DrainingServer, drain_hooks
from tests.handlers.fakes_status import FakeBus, FakeView, FakeWebhooks, reader
from tests.support.waiting import until

HEARTBEAT_S = 0.2


@dataclass
class Served:
    view: FakeView
    hub: ProgressHub
    server: DrainingServer
    port: int


@pytest.fixture
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    """The app served; its heartbeat is HEARTBEAT_S unless the test parametrizes it (indirect)."""
    heartbeat_s = getattr(request, "param", HEARTBEAT_S)
    view = FakeView()
    app = create_app(StatusSettings())
    jobs = reader(view, wait_s=0.05)
    hub = ProgressHub(view, every_s=0.01, max_streams=500)
    commands = JobCommands(jobs, FakeBus(view), Decisions(view), ZoneInfo("UTC"), 366, wait_s=0.05, view_wait_s=0.05)
    app.state.use_cases = StatusUseCases(jobs, commands, JobProgress(jobs, view, hub, heartbeat_s=heartbeat_s),
                                         WebhookReader(jobs, FakeWebhooks({})), parse_api_keys(""))
    drain_hooks(app)[:] = [hub.drain]  # this app's hub, not the one create_app wired
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off", access_log=False,
                            http=guarded_protocol(HttpLimits()), timeout_graceful_shutdown=15)
    server = DrainingServer(config, drain_hooks(app))
    poller = asyncio.create_task(hub.run())
    serving = asyncio.create_task(server.serve())
    await until(lambda: server.started)
    yield Served(view, hub, server, port)
    server.should_exit = True
    await serving
    poller.cancel()


class RawStream:
    """One stream read off the socket: the head, then the chunked body's lines."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.events: list[dict[str, Any]] = []
        self.pings = 0
        self.complete = False  # the body's last chunk came: a clean end, not a cut

    @classmethod
    async def open(cls, port: int, job_id: UUID) -> RawStream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /api/jobs/{job_id}/events HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"content-type: text/event-stream" in head.lower() and b"transfer-encoding: chunked" in head.lower()
        return cls(reader, writer)

    async def next_chunk(self) -> bytes | None:
        """The next chunk's data; None at the body's end."""
        size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
        data = await self.reader.readexactly(size + 2)
        if size == 0:
            self.complete = True
            return None
        return data[:-2]

    async def read(self, until_events: int | None = None) -> None:
        """Chunks until the body ends (or `until_events` events have come)."""
        while until_events is None or len(self.events) < until_events:
            chunk = await self.next_chunk()
            if chunk is None:
                return
            for block in chunk.decode().replace("\r\n", "\n").split("\n\n"):
                if block.startswith(": ping"):
                    self.pings += 1
                elif block:
                    fields = dict(line.split(": ", 1) for line in block.splitlines())
                    assert fields["event"] == "status" and fields["retry"] == "1000"
                    self.events.append(json.loads(fields["data"]))

    def statuses(self) -> list[str]:
        return [event["status"] for event in self.events]

    def close(self) -> None:
        self.writer.close()


async def test_a_stream_sends_each_status_heartbeats_while_idle_and_ends_cleanly_with_the_final(served: Served) -> None:
    job = served.view.add(total=2)
    stream = await RawStream.open(served.port, job)
    await stream.read(until_events=1)
    async with asyncio.timeout(5):
        for _ in range(2):  # the job stays scheduled: a heartbeat every HEARTBEAT_S, nothing else
            assert await stream.next_chunk() == b": ping\r\n\r\n"
    served.view.move(job, "completed", succeeded=2)
    async with asyncio.timeout(5):
        await stream.read()
    assert stream.statuses() == ["scheduled", "completed"] and stream.complete
    assert stream.events[-1]["images"]["succeeded"] == 2
    await until(lambda: served.hub.open_streams == 0)
    stream.close()


@pytest.mark.parametrize("served", [30.0], indirect=True)  # no heartbeat write could reveal the dead socket
async def test_a_client_that_leaves_frees_its_stream_at_once_not_at_the_next_heartbeat(served: Served) -> None:
    job = served.view.add()
    stream = await RawStream.open(served.port, job)
    await stream.read(until_events=1)
    assert served.hub.open_streams == 1
    stream.close()
    await until(lambda: served.hub.open_streams == 0, 2.0)


async def test_a_client_that_leaves_after_pipelining_a_request_behind_its_stream_frees_the_stream(
        served: Served) -> None:
    """A request queued behind the stream pauses reading, so the server learns the client left
    only when a heartbeat's write fails; uvicorn then tells only the newest request of the
    connection, and the stream is the older one, still running (shared/http_guard.py tells it
    too). Without that, the stream would hold its slot until its job is final."""
    job = served.view.add()
    stream = await RawStream.open(served.port, job)
    await stream.read(until_events=1)
    stream.writer.write(f"GET /api/status/{job} HTTP/1.1\r\nHost: t\r\n\r\n".encode())  # queued behind it
    await stream.writer.drain()
    await until(lambda: any(c.pipeline for c in served.server.server_state.connections))  # queued
    stream.close()
    await until(lambda: served.hub.open_streams == 0, 10 * HEARTBEAT_S)


async def test_draining_ends_every_open_stream_with_a_complete_response_at_once(served: Served) -> None:
    jobs = [served.view.add() for _ in range(3)]
    streams = [await RawStream.open(served.port, job) for job in jobs]
    for stream in streams:
        await stream.read(until_events=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    served.server.should_exit = True  # as SIGTERM does: the server drains
    async with asyncio.timeout(5):
        for stream in streams:
            await stream.read()
    assert all(stream.complete and stream.statuses() == ["scheduled"] for stream in streams)
    assert loop.time() - started < 2  # not the 15 s graceful timeout
    await until(lambda: served.hub.open_streams == 0)
    for stream in streams:
        stream.close()


async def test_finished_streams_leave_no_cyclic_garbage(served: Served) -> None:
    """Each stream that ends must be freed by reference counting: with sse-starlette's response
    every finished stream left ~100 objects in reference cycles (anyio's task group keeping each
    cancelled task's CancelledError), for the garbage collector to walk in the middle of a burst."""
    jobs = [served.view.add() for _ in range(40)]
    streams = [await RawStream.open(served.port, job) for job in jobs]
    for stream in streams:
        await stream.read(until_events=1)
    gc.collect()
    gc.disable()
    try:
        for job in jobs:
            served.view.move(job, "completed", succeeded=2)
        async with asyncio.timeout(5):
            for stream in streams:
                await stream.read()
        await until(lambda: served.hub.open_streams == 0)
        for stream in streams:
            stream.close()
        await asyncio.sleep(0)  # what closing the sockets frees
        garbage = gc.collect()
    finally:
        gc.enable()
    assert all(stream.statuses() == ["scheduled", "completed"] for stream in streams)
    assert garbage < 2 * len(streams), f"{garbage} objects in reference cycles after {len(streams)} streams"
