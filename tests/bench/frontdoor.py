"""The front door under overload (issue 7 goal 2): submits at a fixed rate (open loop: request
i is sent at start + i/rate whether or not earlier ones were answered), jobs of 1-10 visits with
1-3 images each, due at once, so the processors drain a growing backlog on the same machine.

Latency is measured from the moment each request was due to be sent, so a stalled server
cannot hide its queue (no coordinated omission). A request unanswered within `timeout_s`
counts as unanswered.

The load generator shares the machine with the stack, and any pause of its own counts against
ingest (a request is late from its due time, whoever delayed it). So it is kept lean: bodies
are encoded before the clock starts, a request's task exists only from its due time, and the
generator's heap is frozen while it sends. Before that, its own garbage collections over 10,000
pre-built bodies and 10,000 sleeping tasks paused it for up to ~300 ms, which was most of the
p99 it reported.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.bench.images import fresh_images
from tests.bench.timing import pct

JSON = {"Content-Type": "application/json"}


IMAGES_PER_BODY = 31  # at most 10 visits x 3 images: numbers v * 3 + i < 31


def mixed_body(rng: random.Random, image_base: str, counter: int, first_image: int = 0) -> dict[str, Any]:
    """1-10 visits of 1-3 images; image numbers first_image + counter * 31 + v * 3 + i, so
    bodies with different counters share none."""
    visits = []
    for v in range(rng.randint(1, 10)):
        base = first_image + counter * IMAGES_PER_BODY + v * 3
        urls = [f"{image_base}/img/{base + i}.jpg" for i in range(rng.randint(1, 3))]
        visits.append({"store_id": "S00339218", "visit_time": "10:00", "image_url": urls})
    return {"count": len(visits), "visits": visits}


@dataclass
class Tally:
    answered: list[tuple[float, float]] = field(default_factory=list)  # (due after start, latency) of each 200
    codes: dict[str, int] = field(default_factory=dict)
    lags: list[float] = field(default_factory=list)


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Move everything alive now out of the collector's reach while the load runs, so the
    generator's own collections stay short (what they would scan cannot be garbage anyway)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def overload(ingest: str, image_base: str, rate: int = 500, seconds: float = 20.0,
                   timeout_s: float = 10.0, seed: int = 7) -> dict[str, Any]:
    rng = random.Random(seed)
    total = int(rate * seconds)
    first = fresh_images(total * IMAGES_PER_BODY)
    bodies = [mixed_body(rng, image_base, i, first) for i in range(total)]
    images = sum(sum(len(v["image_url"]) for v in b["visits"]) for b in bodies)
    payloads = [json.dumps(b).encode() for b in bodies]
    del bodies
    tally = Tally()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        await open_connections(session, ingest, 64)
        with frozen_heap():
            watcher = asyncio.create_task(watch_lag(tally.lags))
            await send_open_loop(session, f"{ingest}/processJob", payloads, rate, tally)
            watcher.cancel()
    return report(tally, rate, seconds, total, images)


async def open_connections(session: aiohttp.ClientSession, ingest: str, count: int) -> None:
    """Open a pool of keep-alive connections first, as a client in steady state has them: what
    is measured is ingest under load, not 500 TCP handshakes in the first second."""
    async def ping() -> None:
        async with session.get(f"{ingest}/healthz") as response:
            await response.read()
    await asyncio.gather(*(ping() for _ in range(count)))


async def send_open_loop(session: aiohttp.ClientSession, url: str, payloads: list[bytes], rate: int,
                         tally: Tally) -> None:
    """Start request i at its due time (start + i/rate); when the generator itself is late,
    every request already due starts at once and is timed from its own due time."""
    start = time.perf_counter() + 0.2
    in_flight: set[asyncio.Task[None]] = set()
    for i, payload in enumerate(payloads):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(submit_one(session, url, payload, due, start, tally))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)


async def submit_one(session: aiohttp.ClientSession, url: str, payload: bytes, due: float, start: float,
                     tally: Tally) -> None:
    try:
        async with session.post(url, data=payload, headers=JSON) as response:
            await response.read()
            key = str(response.status)
    except (TimeoutError, aiohttp.ClientError) as exc:
        key = f"no answer ({type(exc).__name__})"
    except Exception as exc:  # noqa: BLE001 - counted, never lost: a lost request would flatter the figures
        key = f"client error ({type(exc).__name__})"
    tally.codes[key] = tally.codes.get(key, 0) + 1
    if key == "200":
        tally.answered.append((due - start, time.perf_counter() - due))


async def watch_lag(lags: list[float]) -> None:
    """The generator's own delays, reported beside the latencies so they are not blamed on ingest."""
    while True:
        before = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(time.perf_counter() - before - 0.01)


def report(tally: Tally, rate: int, seconds: float, total: int, images: int) -> dict[str, Any]:
    if sum(tally.codes.values()) != total:
        raise RuntimeError(f"{total} requests sent but {sum(tally.codes.values())} accounted for: {tally.codes}")
    latencies = [latency for _, latency in tally.answered]

    def ms(q: float) -> float:
        return round(1000 * pct(latencies, q), 1) if latencies else -1

    windows: dict[int, list[float]] = {}
    for sent, latency in tally.answered:
        windows.setdefault(int(sent // 2), []).append(latency)
    by_window = {f"{2 * w}s": round(1000 * max(v), 0) for w, v in sorted(windows.items())}
    return {"client_loop_lag_max_ms": round(1000 * max(tally.lags, default=0.0), 1), "max_by_2s_ms": by_window,
            "rate": rate, "seconds": seconds, "requests": total, "images": images, "answers": tally.codes,
            "p50_ms": ms(0.5), "p95_ms": ms(0.95), "p99_ms": ms(0.99), "max_ms": ms(1.0)}
