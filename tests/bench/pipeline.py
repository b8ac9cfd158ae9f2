"""`make bench`: the DESIGN §6 goals measured on this machine, each against its limit measured
in the same run. Prints figures; asserts nothing (speed is reported, never a test).

1. per-image limit: a plain aiohttp + Pillow loop over the local image server
2. pipeline throughput, simulated GPU off, as a ratio of (1) (goal >= 0.5)
3. wall time of a 200-image job, simulated GPU on (100-400 ms) and off
4. ingest: accepted jobs/s and p99 latency from one ingest process, driven by wrk
   (goal 2,000/s, p99 <= 50 ms)
5. scheduling lateness (task emitted - scheduled_time) with 1,000 jobs falling due per second
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from PIL import Image

from tests.support.client import Client
from tests.support.invariants import read_all
from tests.support.stack import Infra, Stack
from tests.support.waiting import wait_for

CONCURRENCY = 64


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def urls(base: str, n: int, offset: int = 0) -> list[str]:
    return [f"{base}/img/{100 + (i + offset) % 900}x{100 + (i + offset) // 900 % 900}.jpg" for i in range(n)]


async def limit_loop(image_urls: list[str]) -> float:
    """Images per second for a plain fetch-and-measure loop (the per-image limit)."""
    async with aiohttp.ClientSession() as session:
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(url: str) -> None:
            async with sem, session.get(url) as response:
                data = await response.read()
            with Image.open(io.BytesIO(data)) as image:
                _ = image.size

        started = time.perf_counter()
        await asyncio.gather(*(one(u) for u in image_urls))
        return len(image_urls) / (time.perf_counter() - started)


def job_of(image_urls: list[str], per_visit: int = 10, scheduled: str | None = None) -> dict[str, Any]:
    visits = [{"store_id": "S00339218", "visit_time": "10:00", "image_url": image_urls[i:i + per_visit]}
              for i in range(0, len(image_urls), per_visit)]
    body: dict[str, Any] = {"count": len(visits), "visits": visits}
    if scheduled:
        body["scheduled_time"] = scheduled
    return body


def run_job(client: Client, image_urls: list[str]) -> float:
    started = time.perf_counter()
    job_id = client.submit_ok(job_of(image_urls))
    final = client.wait_final(job_id, deadline_s=600)
    assert final["status"] == "completed", final
    return time.perf_counter() - started


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local counter = 0
request = function()
  local due = BASE + counter / PER_SECOND
  counter = counter + 1
  local stamp = os.date("!%Y-%m-%dT%H:%M:%S", math.floor(due)) .. string.format(".%03dZ", math.floor((due % 1) * 1000))
  local body = string.format(BODY, stamp)
  return wrk.format(nil, "/processJob", nil, body)
end
"""


def wrk(url: str, body_with_time: str, base_epoch: float, per_second: int, connections: int,
        seconds: int) -> dict[str, float]:
    """Drive ingest with wrk (a C load generator: a Python client saturates first on 2 cores)."""
    script = WRK_SCRIPT.replace("BASE", repr(base_epoch)).replace("PER_SECOND", str(per_second))
    script = script.replace("BODY", json.dumps(body_with_time))
    path = "/tmp/imagejobs-bench.lua"
    with open(path, "w") as handle:
        handle.write(script)
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", path, url],
                         capture_output=True, text=True, check=True).stdout
    figures = {"requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for q in ("50", "99"):
        value, unit = re.search(rf"\s{q}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        figures[f"p{q}_ms"] = float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    figures["non_2xx"] = float(errors.group(1)) if errors else 0.0
    return figures


def body_template(client: Client) -> str:
    """A one-image job whose scheduled_time wrk fills in (`%s`)."""
    body = json.dumps(job_of([client.image(10, 10)], scheduled="SCHEDULED"))
    return body.replace("%", "%%").replace("SCHEDULED", "%s")


def lateness(client: Client, per_second: int, seconds: int) -> tuple[list[float], dict[str, float]]:
    """Submit jobs falling due `per_second` per second (wrk, ahead of time), then read when each
    one's task was emitted (the record's CreateTime) against its scheduled_time."""
    base = time.time() + seconds + 4  # all submitted before the first falls due
    load = wrk(client.ingest, body_template(client), base, per_second, 16, seconds)
    jobs = {str(e.job_id): e.scheduled_time for _, e in read_all(client, ["jobs"])["jobs"]
            if e.type == "JobSubmitted" and base - 0.001 <= e.scheduled_time.timestamp() < base + 3600}
    wait_for(lambda: time.time() > max(t.timestamp() for t in jobs.values()) + 2, 300, "the last due time")

    def emitted() -> list[tuple[int, Any]] | None:
        tasks = [(ts, e) for ts, e in read_all(client, ["tasks"])["tasks"] if str(e.job_id) in jobs]
        return tasks if len(tasks) >= len(jobs) else None
    tasks = wait_for(emitted, 120, "every due job's task", every_s=1.0)
    return [ts / 1000 - jobs[str(e.job_id)].timestamp() for ts, e in tasks], load


def main() -> int:
    infra = Infra.start()
    report: dict[str, Any] = {}
    stacks: list[Stack] = []
    try:
        off = Stack(infra, env={"PROCESSOR_GPU_DELAY_MS": "0", "IMAGE_CACHE_TTL_S": "0",
                                "PROCESSOR_CONCURRENCY": "32", "LOG_LEVEL": "WARNING"})
        stacks.append(off)
        client = Client(off, off.start_all(processors=2))
        off.wait_partitions_shared()
        n = 1500
        warm = urls(client.images, n)
        asyncio.run(limit_loop(warm))  # warms the image server's render cache for both runs
        limit = asyncio.run(limit_loop(warm))
        pipeline = n / run_job(client, warm)
        report["per_image_limit_images_per_s"] = round(limit, 1)
        report["pipeline_gpu_off_images_per_s"] = round(pipeline, 1)
        report["pipeline_to_limit_ratio"] = round(pipeline / limit, 3)
        report["job_200_images_gpu_off_s"] = round(run_job(client, urls(client.images, 200, offset=n)), 2)
        later = (datetime.now(UTC) + timedelta(days=100)).timestamp()
        ingest = wrk(client.ingest, body_template(client), later, 1000, 32, 5)
        report["ingest_accepted_per_s"] = round(ingest["requests_per_s"], 1)
        report["ingest_p50_ms"] = round(ingest["p50_ms"], 1)
        report["ingest_p99_ms"] = round(ingest["p99_ms"], 1)
        report["ingest_non_2xx"] = int(ingest["non_2xx"])
        late, _ = lateness(client, per_second=1000, seconds=3)
        report["lateness_jobs"] = len(late)
        report["lateness_p50_ms"] = round(statistics.median(late) * 1000, 1)
        report["lateness_p99_ms"] = round(pct(late, 0.99) * 1000, 1)
        off.stop()
        on = Stack(infra, env={"PROCESSOR_GPU_DELAY_MS": "100-400", "IMAGE_CACHE_TTL_S": "0", "LOG_LEVEL": "WARNING"})
        stacks.append(on)
        client_on = Client(on, on.start_all(processors=2))
        on.wait_partitions_shared()
        report["job_200_images_gpu_on_s"] = round(run_job(client_on, urls(client_on.images, 200, offset=2 * n)), 2)
        on.stop()
    finally:
        for stack in stacks:
            stack.stop()
        infra.stop()
    print(json.dumps(report, indent=2))
    print(f"pipeline/limit = {report['pipeline_to_limit_ratio']} (goal >= 0.5); "
          f"ingest {report['ingest_accepted_per_s']}/s (goal 2000), p99 {report['ingest_p99_ms']} ms (goal 50); "
          f"lateness p99 {report['lateness_p99_ms']} ms (goal 100)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
