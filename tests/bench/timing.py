"""Latency scenarios: one job on an idle stack (goal 3) and release lateness in a steady stream
of jobs falling due (goal 4)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import tempfile
import time
from typing import Any

import aiohttp

from shared.events import FINAL_STATUSES
from tests.bench.images import fresh_images
from tests.support.invariants import _read_all


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one_job_latencies(ingest: str, status_url: str, image_base: str, jobs: int = 50,
                            pause_s: float = 0.1) -> list[float]:
    """Seconds from submit to `completed`, for `jobs` one-image jobs due now, one at a time
    (status polled every 2 ms, so the figure is the system's, not the poller's)."""
    out = []
    first = fresh_images(jobs)
    async with aiohttp.ClientSession() as session:
        for i in range(first, first + jobs):
            body = {"count": 1, "visits": [{"store_id": "S00339218", "visit_time": "10:00",
                                            "image_url": [f"{image_base}/img/{i}.jpg"]}]}
            started = time.perf_counter()
            async with session.post(f"{ingest}/processJob", json=body) as response:
                job_id = (await response.json())["job_id"]
            while True:
                async with session.get(f"{status_url}/api/status/{job_id}") as response:
                    status = (await response.json())["status"]
                if status in FINAL_STATUSES:
                    break
                await asyncio.sleep(0.002)
            if status != "completed":
                raise RuntimeError(f"job {job_id} ended {status}")
            out.append(time.perf_counter() - started)
            await asyncio.sleep(pause_s)  # idle between jobs
    return out


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local counter = 0
request = function()
  local due = BASE + counter / PER_SECOND
  counter = counter + 1
  local stamp = os.date("!%Y-%m-%dT%H:%M:%S", math.floor(due)) .. string.format(".%03dZ", math.floor((due % 1) * 1000))
  return wrk.format(nil, "/processJob", nil, string.format(BODY, stamp))
end
"""


def wrk(url: str, body_with_time: str, base_epoch: float, per_second: int, connections: int,
        seconds: int) -> dict[str, float]:
    """Drive ingest with wrk (a C load generator): job i is due at base + i/per_second."""
    script = WRK_SCRIPT.replace("BASE", repr(base_epoch)).replace("PER_SECOND", str(per_second))
    script = script.replace("BODY", json.dumps(body_with_time))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", handle.name, url],
                         capture_output=True, text=True, check=True).stdout
    figures = {"requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for q in ("50", "99"):
        value, unit = re.search(rf"\s{q}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        figures[f"p{q}_ms"] = float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    figures["non_2xx"] = float(errors.group(1)) if errors else 0.0
    return figures


def one_image_body(image_url: str) -> str:
    """A one-image job whose scheduled_time wrk fills in (`%s`)."""
    body = json.dumps({"count": 1, "scheduled_time": "SCHEDULED",
                       "visits": [{"store_id": "S00339218", "visit_time": "10:00", "image_url": [image_url]}]})
    return body.replace("%", "%%").replace("SCHEDULED", "%s")


def lateness(ingest: str, image_url: str, bootstrap: str, prefix: str, per_second: int,
             seconds: int) -> tuple[list[float], dict[str, float]]:
    """Jobs falling due `per_second` per second, all submitted ahead (wrk, `seconds` long); the
    lateness of each is its task's record timestamp minus its scheduled_time."""
    base = time.time() + seconds + 5
    load = wrk(ingest, one_image_body(image_url), base, per_second, 16, seconds)
    jobs = {str(e.job_id): e.scheduled_time.timestamp()
            for _, e in asyncio.run(_read_all(bootstrap, prefix, ["jobs"]))["jobs"]
            if e.type == "JobSubmitted" and base - 0.001 <= e.scheduled_time.timestamp()}
    last_due = max(jobs.values())
    while time.time() < last_due + 3:
        time.sleep(0.5)
    deadline = time.monotonic() + 120
    while True:
        tasks = [(ts, e) for ts, e in asyncio.run(_read_all(bootstrap, prefix, ["tasks"]))["tasks"]
                 if str(e.job_id) in jobs]
        if len({str(e.job_id) for _, e in tasks}) >= len(jobs) or time.monotonic() > deadline:
            break
        time.sleep(1)
    first: dict[str, int] = {}
    for ts, e in tasks:
        first[str(e.job_id)] = min(ts, first.get(str(e.job_id), ts))
    late = [first[j] / 1000 - due for j, due in jobs.items() if j in first]
    load["jobs"] = float(len(jobs))
    load["released"] = float(len(late))
    return late, load


def summary(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50_ms": round(1000 * pct(values, 0.5), 1),
            "p99_ms": round(1000 * pct(values, 0.99), 1), "max_ms": round(1000 * max(values), 1)}
