"""The front door under overload (issue 7 goal 2): submits at a fixed rate (open loop: request
i is sent at start + i/rate whether or not earlier ones were answered), jobs of 1-10 visits with
1-3 images each, due at once, so the processors drain a growing backlog on the same machine.

Latency is measured from the moment each request was due to be sent, so a stalled server
cannot hide its queue (no coordinated omission). A request unanswered within `timeout_s`
counts as unanswered.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import aiohttp


def mixed_body(rng: random.Random, image_base: str, counter: int) -> dict[str, Any]:
    visits = []
    for v in range(rng.randint(1, 10)):
        urls = [f"{image_base}/img/{counter * 31 + v * 3 + i}.jpg" for i in range(rng.randint(1, 3))]
        visits.append({"store_id": "S00339218", "visit_time": "10:00", "image_url": urls})
    return {"count": len(visits), "visits": visits}


async def overload(ingest: str, image_base: str, rate: int = 500, seconds: float = 20.0,
                   timeout_s: float = 10.0, seed: int = 7) -> dict[str, Any]:
    rng = random.Random(seed)
    total = int(rate * seconds)
    bodies = [mixed_body(rng, image_base, i) for i in range(total)]
    latencies: list[float] = []
    timeline: list[tuple[float, float]] = []  # (sent at, latency)
    codes: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        # Open a pool of keep-alive connections first, as a client in steady state has them:
        # what is measured is ingest under load, not 500 TCP handshakes in the first second.
        async def ping() -> None:
            async with session.get(f"{ingest}/healthz") as response:
                await response.read()
        await asyncio.gather(*(ping() for _ in range(64)))
        start = time.perf_counter() + 0.2

        async def one(i: int) -> None:
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            try:
                async with session.post(f"{ingest}/processJob", json=bodies[i]) as response:
                    await response.read()
                    key = str(response.status)
            except (TimeoutError, aiohttp.ClientError) as exc:
                key = f"no answer ({type(exc).__name__})"
            codes[key] = codes.get(key, 0) + 1
            if key == "200":
                latencies.append(time.perf_counter() - due)
                timeline.append((due - start, time.perf_counter() - due))

        lags: list[float] = []

        async def watch_lag() -> None:  # the client's own delays, so they are not blamed on ingest
            while True:
                before = time.perf_counter()
                await asyncio.sleep(0.01)
                lags.append(time.perf_counter() - before - 0.01)

        watcher = asyncio.create_task(watch_lag())
        await asyncio.gather(*(one(i) for i in range(total)))
        watcher.cancel()
    latencies.sort()

    def pct(q: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1) if latencies else -1

    images = sum(sum(len(v["image_url"]) for v in b["visits"]) for b in bodies)
    windows: dict[int, list[float]] = {}
    for sent, latency in timeline:
        windows.setdefault(int(sent // 2), []).append(latency)
    by_window = {f"{2 * w}s": round(1000 * max(v), 0) for w, v in sorted(windows.items())}
    return {"client_loop_lag_max_ms": round(1000 * max(lags), 1), "max_by_2s_ms": by_window, "rate": rate,
            "seconds": seconds, "requests": total, "images": images,
            "answers": codes, "p50_ms": pct(0.5), "p95_ms": pct(0.95), "p99_ms": pct(0.99), "max_ms": pct(1.0)}
