"""Slow clients at the front door (issue 19, item 6): while 1,500 connections trickle a header
byte every 5 s and 20 clients each stream a 64 MiB header (each reconnecting when cut off),
normal submits to ingest are timed, and ingest's memory is sampled.

The attack runs in a process of its own (`attack_running`), so its work never holds the
submitter's event loop; both still share the machine with the stack, and the submitter's own
delays are reported beside the latencies (`client_loop_lag_max_ms`) so they are not blamed on
ingest. Each submit opens a new connection, as a client arriving during the attack would:
what is timed is the whole front door, accept and head deadline included.

The blocking-socket helpers at the end drive one hostile connection at a time; the tests use
them (tests/security/test_slow_clients.py, tests/unit/test_http_guard.py).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import uvloop

from tests.bench.frontdoor import watch_lag
from tests.bench.timing import pct

TRICKLE_HEAD = b"GET /healthz HTTP/1.1\r\nHost: ingest\r\nX-Slow: "
HUGE_HEAD = b"GET /healthz HTTP/1.1\r\nHost: ingest\r\nX-Huge: "
CHUNK = b"a" * 65536
SUBMIT_TIMEOUT_S = 10.0
Tally = dict[str, int]


def slow_client_attack(ingest_url: str, image_url: str, trickling: int = 1500, huge_headers: int = 20,
                       submits: int = 200, seconds: float = 20, ingest_pid: int | None = None) -> dict[str, Any]:
    """Submits spread over `seconds` while the attack is held open; latency p50/p99/max in ms,
    answers by code, ingest's RSS before and at its peak and its CPU seconds meanwhile (when
    `ingest_pid` is given), and how the attack's connections ended."""
    rss_before = rss_mib(ingest_pid)
    with attack_running(ingest_url, trickling, huge_headers) as attack:
        cpu_before = cpu_s(ingest_pid)
        results, lags, rss_peak = uvloop.run(timed_submits(ingest_url, image_url, submits, seconds, ingest_pid))
        cpu = cpu_s(ingest_pid) - cpu_before if ingest_pid else None
    return report(results, lags, rss_before, rss_peak, attack) | {
        "ingest_cpu_s": None if cpu is None else round(cpu, 1),
        "trickling": trickling, "huge_headers": huge_headers, "seconds": seconds}


def report(results: list[tuple[str, float]], lags: list[float], rss_before: float | None,
           rss_peak: float | None, attack: Tally) -> dict[str, Any]:
    answers: dict[str, int] = {}
    for key, _ in results:
        answers[key] = answers.get(key, 0) + 1
    latencies = [latency for key, latency in results if key == "200"]

    def ms(q: float) -> float:
        return round(1000 * pct(latencies, q), 1) if latencies else -1

    return {"submits": len(results), "answered_200": len(latencies), "answers": answers,
            "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": ms(1.0),
            "client_loop_lag_max_ms": round(1000 * max(lags, default=0.0), 1),
            "ingest_rss_before_mib": rss_before, "ingest_rss_peak_mib": rss_peak, "attack": attack}


# The normal submits
def future_job(image_url: str) -> dict[str, Any]:
    """One image, due in 300 days (within INGEST_MAX_SCHEDULE_DAYS), so nothing is processed."""
    due = (datetime.now(UTC) + timedelta(days=300)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"count": 1, "scheduled_time": due,
            "visits": [{"store_id": "S00339218", "visit_time": "10:00", "image_url": [image_url]}]}


async def timed_submits(ingest_url: str, image_url: str, submits: int, seconds: float,
                        ingest_pid: int | None) -> tuple[list[tuple[str, float]], list[float], float | None]:
    """(answer, seconds from due) per submit, the generator's loop lags, ingest's peak RSS."""
    payload = json.dumps(future_job(image_url)).encode()
    results: list[tuple[str, float]] = []
    lags: list[float] = []
    peak: list[float] = []
    watchers = [asyncio.create_task(watch_lag(lags)), asyncio.create_task(watch_rss(ingest_pid, peak))]
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    timeout = aiohttp.ClientTimeout(total=SUBMIT_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        sends = []
        for i in range(submits):
            due = start + i * seconds / submits
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            sends.append(asyncio.create_task(submit_one(session, f"{ingest_url}/processJob", payload, due)))
        results = list(await asyncio.gather(*sends))
    for watcher in watchers:
        watcher.cancel()
    return results, lags, max(peak, default=None)


async def submit_one(session: aiohttp.ClientSession, url: str, payload: bytes, due: float) -> tuple[str, float]:
    try:
        async with session.post(url, data=payload, headers={"Content-Type": "application/json"}) as response:
            await response.read()
            key = str(response.status)
    except (TimeoutError, aiohttp.ClientError) as exc:
        key = f"no answer ({type(exc).__name__})"
    except Exception as exc:  # counted, never lost: a lost submit would flatter the figures
        key = f"client error ({type(exc).__name__})"
    return key, time.perf_counter() - due


def rss_mib(pid: int | None) -> float | None:
    """VmRSS of `pid` in MiB (None without a pid or once it has exited)."""
    if pid is None:
        return None
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def cpu_s(pid: int | None) -> float:
    """CPU seconds (user and system) `pid` has used so far; 0 without a pid."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def watch_rss(pid: int | None, peak: list[float], every_s: float = 0.1) -> None:
    """Keep the highest RSS of `pid` seen as `peak[0]`."""
    while pid is not None:
        rss = rss_mib(pid)
        if rss is not None:
            peak[:] = [max([rss, *peak])]
        await asyncio.sleep(every_s)


# The attack, in a process of its own
@contextmanager
def attack_running(url: str, trickling: int, huge_headers: int, every_s: float = 5.0,
                   header_bytes: int = 64 << 20) -> Iterator[Tally]:
    """Hold the attack open against `url` while the block runs, from once every attacker has
    connected (or 30 s have passed); the yielded tally is filled in (how the attack's
    connections ended) when the block exits."""
    context = multiprocessing.get_context("spawn")
    ready, stop, tally_queue = context.Event(), context.Event(), context.Queue()
    worker = context.Process(target=run_attack, daemon=True,
                             args=(url, trickling, huge_headers, every_s, header_bytes, ready, stop, tally_queue))
    worker.start()
    tally: Tally = {}
    try:
        ready.wait(30)
        yield tally
    finally:
        stop.set()
        with suppress(Exception):
            tally.update(tally_queue.get(timeout=30))
        worker.join(10)
        if worker.is_alive():
            worker.kill()
            worker.join()


def run_attack(url: str, trickling: int, huge_headers: int, every_s: float, header_bytes: int, ready: Event,
               stop: Event, out: multiprocessing.Queue[Tally]) -> None:
    # the attacker's CPU is the stack's CPU too: the lighter loop
    out.put(uvloop.run(attack(url, trickling, huge_headers, every_s, header_bytes, ready, stop)))


async def attack(url: str, trickling: int, huge_headers: int, every_s: float, header_bytes: int,
                 ready: Event, stop: Event) -> Tally:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    tally: Tally = {}
    ramp_s = min(every_s, 2.0)  # first connections spread over this, so bytes are not sent in lockstep
    tasks = [asyncio.create_task(trickler(host, port, every_s, i * ramp_s / trickling, tally))
             for i in range(trickling)]
    tasks += [asyncio.create_task(header_streamer(host, port, header_bytes, tally)) for _ in range(huge_headers)]
    while not stop.is_set():
        if tally.get("attackers connected", 0) >= trickling + huge_headers:
            ready.set()
        await asyncio.sleep(0.1)
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=10)
    return tally


def count(tally: Tally, key: str, n: int = 1) -> None:
    tally[key] = tally.get(key, 0) + n


async def trickler(host: str, port: int, every_s: float, delay_s: float, tally: Tally) -> None:
    """One attacker for ever: a request line, then one header byte every `every_s` until the
    server ends the connection; then again on a new one."""
    await asyncio.sleep(delay_s)  # spread the connections' bytes over the period
    first = True
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            count(tally, "trickle connect failed")
            await asyncio.sleep(every_s)
            continue
        count(tally, "attackers connected", int(first))
        first = False
        try:
            count(tally, f"trickle ended {await trickle_once(reader, writer, every_s)}")
        finally:
            writer.close()


async def trickle_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, every_s: float) -> str:
    writer.write(TRICKLE_HEAD)
    try:
        while True:
            try:  # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
                async with asyncio.timeout(every_s):
                    return status_of(await reader.read(4096))
            except TimeoutError:
                writer.write(b"a")
    except (OSError, RuntimeError):  # RuntimeError: uvloop's write on a handle already closed
        return "reset"


async def header_streamer(host: str, port: int, header_bytes: int, tally: Tally) -> None:
    """One attacker for ever: a header of `header_bytes` as fast as the server reads it, then
    again on a new connection once it is answered or cut."""
    first = True
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            count(tally, "huge connect failed")
            await asyncio.sleep(0.1)
            continue
        count(tally, "attackers connected", int(first))
        first = False
        try:
            count(tally, f"huge ended {await stream_once(reader, writer, header_bytes)}")
        finally:
            writer.close()


async def stream_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, header_bytes: int) -> str:
    """How the server ended a header of `header_bytes`: its status, or `reset` when the reset
    came before its answer could be read (asyncio's reader drops what it holds on a reset)."""
    answer = asyncio.ensure_future(reader.read(4096))
    sent = 0
    try:
        writer.write(HUGE_HEAD)
        while sent < header_bytes and not answer.done():
            writer.write(CHUNK)
            sent += len(CHUNK)
            await writer.drain()
        if not answer.done():
            writer.write(b"\r\n\r\n")
        return status_of(await answer)
    except (OSError, RuntimeError):
        return status_of(answer.result()) if answer.done() and not answer.exception() else "reset"
    finally:
        answer.cancel()


def status_of(answer: bytes) -> str:
    """`408`, `431`, ... from the start of a response; `closed` for none."""
    parts = answer.split(b" ", 2)
    return parts[1].decode() if len(parts) > 1 and parts[0].startswith(b"HTTP/") else "closed"


# One hostile connection at a time, on blocking sockets (for the tests)
@dataclass
class Answer:
    """What the server sent back on a connection, up to its close."""

    raw: bytes
    elapsed_s: float = 0.0
    sent: int = 0
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        head = self.raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}

    @property
    def status(self) -> int | None:
        code = status_of(self.raw)
        return int(code) if code.isdigit() else None

    def json(self) -> Any:
        return json.loads(self.raw.split(b"\r\n\r\n", 1)[1])


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def readable(sock: socket.socket, wait_s: float) -> bool:
    return bool(select.select([sock], [], [], wait_s)[0])


def read_to_close(sock: socket.socket, deadline_s: float) -> bytes:
    """Everything the server sends until it closes (or resets: what came before is kept)."""
    raw = b""
    end = time.monotonic() + deadline_s
    while (left := end - time.monotonic()) > 0 and readable(sock, left):
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        raw += data
    return raw


def stream_header_until_answered(url: str, limit: int = 64 << 20, chunk: int = 16384) -> Answer:
    """Send a header of up to `limit` bytes in `chunk`s, looking for an answer after each."""
    started = time.monotonic()
    sent = 0
    with connect(url) as sock:
        try:
            sock.sendall(HUGE_HEAD)
            while sent < limit and not readable(sock, 0.005):
                sock.sendall(CHUNK[:chunk])
                sent += chunk
        except (BrokenPipeError, ConnectionResetError):
            pass
        return Answer(read_to_close(sock, 10), time.monotonic() - started, sent)


def trickle_until_answered(url: str, every_s: float, deadline_s: float) -> Answer:
    """A request line, then a header byte every `every_s` until the server answers or closes."""
    started = time.monotonic()
    with connect(url) as sock:
        sock.sendall(TRICKLE_HEAD)
        while time.monotonic() - started < deadline_s and not readable(sock, every_s):
            sock.sendall(b"a")
        return Answer(read_to_close(sock, 5), time.monotonic() - started)


def measure_slow_clients(infra: Any, image_url: str, quick: bool = False) -> dict[str, Any]:
    """The attack against ingest of a stack as `make run` starts it (every service, two
    processors, default settings)."""
    from tests.support.stack import Stack  # the bench's stack, not needed by the tests' helpers

    stack = Stack(infra)
    try:
        services = stack.start_all(processors=2)
        stack.wait_ready(stack.start_service("storestats"))
        ingest = services["ingest"]
        return slow_client_attack(ingest.url, image_url, submits=60 if quick else 200, seconds=8 if quick else 20,
                                  ingest_pid=ingest.process.pid)
    finally:
        stack.stop()


def slow_client_lines(r: dict[str, Any]) -> list[str]:
    """Markdown for docs/benchmarks.md."""
    s = r.get("slow_clients")
    if not s:
        return []
    ok = s["answered_200"] == s["submits"] and s["p99_ms"] <= 1000
    return ["## Slow clients at the front door (issue 19)", "",
            f"{s['trickling']:,} connections trickling a header byte every 5 s and {s['huge_headers']} clients "
            f"streaming 64 MiB headers (each reconnecting when cut off), on a stack as `make run` starts it; "
            f"{s['submits']} normal submits over {s['seconds']} s, a new connection each:", "",
            "| answered 200 | p50 / p99 / max ms | ingest RSS before → peak | ingest CPU s | goal |",
            "|---|---|---|---|---|",
            f"| {s['answered_200']}/{s['submits']} | {s['p50_ms']} / {s['p99_ms']} / {s['max_ms']} | "
            f"{s['ingest_rss_before_mib']} → {s['ingest_rss_peak_mib']} MiB | {s['ingest_cpu_s']} | "
            f"all answered, p99 ≤ 1,000 ms, memory bounded: {'met' if ok else '**not met**'} |", "",
            f"The submitter's own event loop lagged at most {s['client_loop_lag_max_ms']} ms. Attack: {s['attack']}.",
            ""]
