"""Issue 20: the burst as users run it. A stack as `make run` starts it (every service, two
processors, the store statistics consumer, default settings, INFO logs), one warm-up burst,
then the same 10,000-image burst three times, each observed the way a client would:

  polling   every pending job's status, round and round, over 16 keep-alive connections
  streams   one progress stream per job (GET /api/jobs/{id}/events), plus idle streams on
            far-future jobs so one status process holds STREAM_TARGET open streams
  webhooks  a `callback_url` on every job, to a receiver in this process that verifies each
            signature (Standard Webhooks)

For each: images/s from the due time until the client has seen every job final; the delay
from the view's final status (its row's `updated_at`) to the client seeing it; and CPU seconds
per 1,000 images of every process (services, Kafka, PostgreSQL, this client), so the next
bottleneck is visible.

The three run in ROUNDS rounds, BullMQ's same burst just before each (once the machine is
quiet, the stack idle), and a ratio goal is met only by both yardsticks (`observer_lines`): the
median against the median of every BullMQ burst of the run, and the median of the rounds' ratios
to the BullMQ burst just before each. This machine's speed drifts by a quarter and more within
minutes (one half-hour of these bursts, the same code: 0.49 to 0.94 CPU seconds per 1,000
images), so one BullMQ burst at the start of the run measured the drift as much as the systems;
and BullMQ's own bursts scatter (969 to 1,384 images/s within ten minutes), so one just before
each is noisy too. The ratio to the burst at the start of the run is printed as well."""

from __future__ import annotations

import asyncio
import base64
import os
import statistics
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import psycopg
import uvloop
from aiohttp import web
from standardwebhooks import Webhook

from shared.events import FINAL_STATUSES
from shared.machine import busy_share, machine_cpu_s
from tests.bench.burst import burst_bodies, run_burst, submit_all
from tests.bench.images import fresh_images
from tests.bench.soak_stack import process_tree

CONNECTIONS = 16
HOWS = ("polling", "streams", "webhooks")
ROUNDS = 2  # of the three ways, each after BullMQ's burst
STREAM_TARGET = 2000
SECRET = "whsec_" + base64.b64encode(b"imagejobs bench webhook secret!!").decode()
HZ = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def children(pid: int) -> list[int]:
    return process_tree().get(pid, [])


def processes(stack: Any, infra: Any) -> dict[str, list[int]]:
    """name -> pids of every process the burst costs (PostgreSQL: the server and its backends,
    looked up again at each reading)."""
    named: dict[str, list[int]] = {}
    counts: dict[str, int] = {}
    for service in stack.processes:
        if service.process.poll() is None and service.name != "sample_images":
            counts[service.name] = counts.get(service.name, 0) + 1
            label = service.name if service.name != "processor" else f"processor {counts[service.name]}"
            named[label] = [service.process.pid]
    named["kafka"] = [infra.kafka.process.pid]
    pg = infra.pg.process.pid
    named["postgresql"] = [pg, *children(pg)]
    named["bench client"] = [os.getpid()]
    return named


def cpu_reading(stack: Any, infra: Any) -> dict[str, int]:
    return {name: sum(cpu_ticks(p) for p in pids) for name, pids in processes(stack, infra).items()}


def cpu_per_thousand(before: dict[str, int], after: dict[str, int], images: int) -> dict[str, float]:
    return {name: round((after[name] - before.get(name, 0)) / HZ / images * 1000, 3) for name in after}


async def poll_until_final(status_url: str, job_ids: list[str], seen_at: dict[str, float]) -> int:
    """16 keep-alive connections, each taking the next pending job in turn (round and round);
    returns how many reads that took. A closed loop: each connection asks again as soon as it
    has its answer, so the cheaper a read, the more reads (and the more of the client's own CPU)."""
    pending = deque(job_ids)
    reads = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal reads
        while pending:
            job_id = pending.popleft()
            async with session.get(f"{status_url}/api/status/{job_id}") as response:
                body = await response.json()
            reads += 1
            if body.get("status") in FINAL_STATUSES:
                seen_at[job_id] = time.time()
            else:
                pending.append(job_id)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONNECTIONS)) as session:
        await asyncio.gather(*(worker(session) for _ in range(CONNECTIONS)))
    return reads


async def follow_stream(session: aiohttp.ClientSession, status_url: str, job_id: str,
                        seen_at: dict[str, float] | None, opened: Callable[[], None]) -> None:
    """Read a job's progress stream; record when the final status arrives."""
    async with session.get(f"{status_url}/api/jobs/{job_id}/events",
                           timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as response:
        if response.status != 200:
            raise RuntimeError(f"stream of {job_id}: {response.status} {await response.text()}")
        opened()
        async for raw in response.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("data:") and seen_at is not None and '"status":"' in line:
                status = line.split('"status":"', 1)[1].split('"', 1)[0]
                if status in FINAL_STATUSES:
                    seen_at[job_id] = time.time()
                    return


class Receiver:
    """Webhooks on loopback: each verified, the first arrival per job timed."""

    def __init__(self) -> None:
        self.seen_at: dict[str, float] = {}
        self.deliveries = 0
        self.bad_signatures = 0
        self._verifier = Webhook(SECRET)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.deliveries += 1
        try:
            status = self._verifier.verify(body, dict(request.headers))
        except Exception:  # noqa: BLE001 - counted and reported
            self.bad_signatures += 1
            return web.Response(status=400)
        self.seen_at.setdefault(status["job_id"], time.time())
        return web.Response(status=204)


async def observed_burst(database_url: str, ingest: str, status_url: str, image_base: str, how: str,
                         jobs: int, lead_s: float = 10.0, at_due: Callable[[], None] = lambda: None,
                         at_end: Callable[[], None] = lambda: None) -> dict[str, Any]:
    due = datetime.now(UTC) + timedelta(seconds=lead_s)
    bodies = burst_bodies(image_base, jobs, 10, due, first_image=fresh_images(jobs * 10))
    seen_at: dict[str, float] = {}
    receiver = Receiver()
    idle: list[asyncio.Task[None]] = []
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    try:
        if how == "webhooks":
            await receiver.start()
            for body in bodies:
                body["callback_url"] = receiver.url
        job_ids = await submit_all(ingest, bodies)
        follow: list[asyncio.Task[None]] = []
        if how == "streams":
            opened = [0]

            def count() -> None:
                opened[0] += 1
            later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
            idle_jobs = await submit_all(ingest, [{**b, "scheduled_time": later} for b in
                                                  burst_bodies(image_base, STREAM_TARGET - jobs, 1, due)])
            idle = [asyncio.create_task(follow_stream(session, status_url, j, None, count)) for j in idle_jobs]
            follow = [asyncio.create_task(follow_stream(session, status_url, j, seen_at, count)) for j in job_ids]
            deadline = time.monotonic() + lead_s
            while opened[0] < STREAM_TARGET and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            streams_open = opened[0]
        due_wall = due.timestamp()
        if time.time() > due_wall:
            raise RuntimeError(f"{how}: set-up ran past the due time: raise lead_s")
        await asyncio.sleep(due_wall - time.time())
        at_due()  # the CPU readings from here on are the burst's own, without its set-up
        reads = 0
        if how == "polling":
            reads = await poll_until_final(status_url, job_ids, seen_at)
        elif how == "streams":
            await asyncio.gather(*follow)
        else:
            while len(receiver.seen_at) < len(job_ids):
                await asyncio.sleep(0.02)
            seen_at = receiver.seen_at
        at_end()  # the client has seen every job final: before the read-back and the teardown
        last = max(seen_at.values())
        final_at = await final_times(database_url, job_ids)
        delays = sorted(max(0.0, seen_at[j] - final_at[j]) * 1000 for j in job_ids)
        result: dict[str, Any] = {
            "images": jobs * 10, "seconds": round(last - due_wall, 2),
            "images_per_s": round(jobs * 10 / (last - due_wall), 1),
            "delay_p50_ms": round(statistics.median(delays), 1),
            "delay_p99_ms": round(delays[int(0.99 * (len(delays) - 1))], 1), "delay_max_ms": round(delays[-1], 1)}
        if how == "polling":
            result["reads"] = reads
        if how == "streams":
            result["streams_open"] = streams_open
        if how == "webhooks":
            result["deliveries"], result["bad_signatures"] = receiver.deliveries, receiver.bad_signatures
        return result
    finally:
        for task in idle:
            task.cancel()
        await asyncio.gather(*idle, return_exceptions=True)
        await session.close()
        await receiver.stop()


async def final_times(database_url: str, job_ids: list[str]) -> dict[str, float]:
    """When the view made each job final (the fold stamps `updated_at` on a status change)."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        rows = await (await conn.execute("SELECT job_id::text, updated_at FROM status_jobs WHERE job_id = ANY(%s)"
                                         " AND status IN ('completed', 'failed', 'cancelled')",
                                         (job_ids,))).fetchall()
    return {j: at.timestamp() for j, at in rows}


QUIET = 0.15  # the machine's busy share under which a burst may start


def wait_until_quiet(busy_below: float = QUIET, within_s: float = 60.0) -> float:
    """Wait until the machine was less than `busy_below` busy over a second (the store statistics
    catching up after a burst, say, are done), at most `within_s`; the last second's share."""
    deadline = time.monotonic() + within_s
    share = 1.0
    while time.monotonic() < deadline:
        before = machine_cpu_s()
        time.sleep(1.0)
        share = busy_share(before, machine_cpu_s())
        if share < busy_below:
            break
    return round(share, 3)


def bullmq_burst(peers: Any, images: int) -> dict[str, Any]:
    """BullMQ's burst of `images`, once the machine is quiet: its images/s (None, and why, if it
    could not run) and how busy the machine was just before it."""
    busy = wait_until_quiet()
    result, note = peers.bullmq(images, lead=10)
    return {"images_per_s": (result or {}).get("images_per_s"), "note": note, "machine_busy_before": busy}


def measure_observers(infra: Any, image_base: str, quick: bool = False, peers: Any = None) -> dict[str, Any]:
    """`peers`: a tests.bench.peers.PeerRunner, to run BullMQ's burst just before each observed one.
    ROUNDS rounds of the three ways; each way's figures are the medians of its
    rounds (its delays' p99 and max the worst round's), with every round's rate kept."""
    from tests.support.stack import Stack

    stack = Stack(infra, env={"WEBHOOK_SECRET": SECRET, "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
                              "STATUS_STREAM_HEARTBEAT_S": "15"})
    jobs = 200 if quick else 1000
    rounds = ROUNDS
    out: dict[str, Any] = {"jobs": jobs, "images": jobs * 10, "rounds": rounds, "bullmq_bursts": [],
                           "bullmq_notes": [], "busy_before_bursts": []}
    runs: dict[str, list[dict[str, Any]]] = {how: [] for how in HOWS}
    try:
        services = stack.start_all(processors=2)
        stack.wait_ready(stack.start_service("storestats"))
        stack.wait_partitions_shared()
        ingest, status = services["ingest"].url, services["status"].url
        uvloop.run(run_burst(ingest, status, image_base, jobs=jobs // 2, lead_s=5))  # warm-up
        for _ in range(rounds):
            for how in HOWS:
                bullmq: float | None = None
                if peers is not None:
                    ran = bullmq_burst(peers, jobs * 10)
                    bullmq = ran["images_per_s"]
                    out["busy_before_bursts"].append(ran["machine_busy_before"])
                    if bullmq:
                        out["bullmq_bursts"].append(bullmq)
                    if ran["note"]:
                        out["bullmq_notes"].append(ran["note"])
                quiet = wait_until_quiet()
                out["busy_before_bursts"].append(quiet)
                before = cpu_reading(stack, infra)
                due: dict[str, int] = {}
                seen: dict[str, int] = {}
                result = uvloop.run(observed_burst(stack.database_url, ingest, status, image_base, how, jobs,
                                                   at_due=lambda d=due: d.update(cpu_reading(stack, infra)),
                                                   at_end=lambda e=seen: e.update(cpu_reading(stack, infra))))
                result["cpu_s_per_1000_images"] = cpu_per_thousand(before, cpu_reading(stack, infra), jobs * 10)
                result["cpu_s_per_1000_images_from_due"] = cpu_per_thousand(due, seen, jobs * 10)
                result["machine_busy_before"] = quiet
                result["bullmq_just_before"] = bullmq
                runs[how].append(result)
    finally:
        stack.stop()
    for how, results in runs.items():
        out[how] = combined(results)
    return out


def combined(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One way's rounds as one row: median rate, p50 delay and CPU; the worst p99 and max delay;
    deliveries and bad signatures summed, the fewest streams open; every round's rate, and its
    ratio to the BullMQ burst just before it."""
    def median_by_process(key: str) -> dict[str, float]:
        names = dict.fromkeys(name for r in results for name in r[key])
        return {name: round(statistics.median(r[key].get(name, 0.0) for r in results), 3) for name in names}
    row = {"images": results[0]["images"],
           "images_per_s": round(statistics.median(r["images_per_s"] for r in results), 1),
           "runs_images_per_s": [r["images_per_s"] for r in results],
           "runs_seconds": [r["seconds"] for r in results],
           "pair_ratios": [round(r["images_per_s"] / r["bullmq_just_before"], 3) for r in results
                           if r.get("bullmq_just_before")],
           "machine_busy_before": [r.get("machine_busy_before") for r in results],
           "delay_p50_ms": round(statistics.median(r["delay_p50_ms"] for r in results), 1),
           "delay_p99_ms": max(r["delay_p99_ms"] for r in results),
           "delay_max_ms": max(r["delay_max_ms"] for r in results),
           "cpu_s_per_1000_images": median_by_process("cpu_s_per_1000_images"),
           "cpu_s_per_1000_images_from_due": median_by_process("cpu_s_per_1000_images_from_due")}
    if "reads" in results[0]:
        row["reads"] = round(statistics.median(r["reads"] for r in results))
    if "streams_open" in results[0]:
        row["streams_open"] = min(r["streams_open"] for r in results)
    if "deliveries" in results[0]:
        row["deliveries"] = sum(r["deliveries"] for r in results)
        row["bad_signatures"] = sum(r["bad_signatures"] for r in results)
    return row


def observer_lines(r: dict[str, Any], bullmq: float | None, limit: float | None,
                   bullmq_images: int | None = None) -> list[str]:
    """The report's section (docs/benchmarks.md). `bullmq`: its burst at the start of the run, of
    `bullmq_images` (pooled with the section's bursts only when that is this burst's size).

    A way meets a ratio goal only by both yardsticks: its median rate against the median of the
    run's BullMQ bursts, and the median of its rounds' ratios to the BullMQ burst just before
    each. The second is the paired one, the first the less noisy."""
    def ratio(rate: float, of: float | None) -> str:
        return f"{rate / of:.2f}×" if of else "n/a"
    goals = {"polling": (2.0, None), "streams": (2.5, 250), "webhooks": (2.5, 1000)}
    start_pooled = bool(bullmq) and bullmq_images in (None, r["images"])
    bursts = ([bullmq] if start_pooled else []) + [b for b in r.get("bullmq_bursts", []) if b]
    reference = statistics.median(bursts) if bursts else None
    rounds = r.get("rounds", 1)
    busy = [b for b in r.get("busy_before_bursts", []) if b is not None]
    lines = ["## Observing completion on the `make run` stack (issue 20)", "",
             f"The same burst ({r['images']:,} images in {r['jobs']:,} jobs due at once) on a stack as `make run`"
             " starts it (every service, two processors, store statistics, default settings, INFO logs), after one"
             f" warm-up burst; {rounds} round{'s' if rounds > 1 else ''} of the three ways, BullMQ's same burst"
             " just before each. Each burst, BullMQ's and ours, started once the machine was less than"
             f" {QUIET:.0%} busy over a second (the stack idle; the busiest such second: {max(busy, default=0):.0%})."
             " A way's figures are the median of its rounds (the delays' p99 and max: the worst round's). A ratio"
             " goal is met only if it holds by both yardsticks: the way's median against the median of the run's"
             f" BullMQ bursts ({', '.join(f'{b:,.0f}' for b in bursts) or 'none'} images/s"
             + (", the first at the start of the run" if start_pooled else "")
             + "), and the median of its rounds' ratios to the BullMQ burst just before each. This machine's speed"
             " drifts within minutes, and one BullMQ burst is as noisy as one of ours (tests/bench/observe.py).", "",
             "| observed by | images/s (each round) | × BullMQ (median of the run's) | × the burst just before"
             " (each round) | × BullMQ at the start | × limit | final status → client sees it p50 / p99 / max ms |"
             " goal |", "|---|---|---|---|---|---|---|---|"]
    for how in HOWS:
        row = r[how]
        need, delay = goals[how]
        pairs = row.get("pair_ratios", [])
        paired = statistics.median(pairs) if pairs else None
        met = (bool(reference) and row["images_per_s"] >= need * reference and paired is not None
               and paired >= need and (delay is None or row["delay_p99_ms"] <= delay))
        goal = f"≥ {need}× BullMQ" + (f", p99 ≤ {delay} ms" if delay else "") + (": met" if met else ": **not met**")
        each = ", ".join(f"{v:,.0f}" for v in row.get("runs_images_per_s", [row["images_per_s"]]))
        each_pair = ", ".join(f"{v:.2f}×" for v in pairs)
        lines.append(f"| {how} | {row['images_per_s']:,} ({each}) | {ratio(row['images_per_s'], reference)} | "
                     + (f"{paired:.2f}× ({each_pair})" if paired is not None else "n/a") + " | "
                     f"{ratio(row['images_per_s'], bullmq)} | {ratio(row['images_per_s'], limit)} | "
                     f"{row['delay_p50_ms']:,} / {row['delay_p99_ms']:,} / {row['delay_max_ms']:,} | {goal} |")
    if r.get("bullmq_notes"):
        lines += ["", "BullMQ: " + "; ".join(r["bullmq_notes"])]
    names = list(r["polling"]["cpu_s_per_1000_images"])
    lines += ["", "CPU seconds per 1,000 images, by process: from the due time until the client saw every job"
              " final (the burst's own work), then over the whole observed burst (set-up included: submitting"
              " the jobs, opening 2,000 streams):", "",
              "| process | " + " | ".join(f"{how} from due" for how in HOWS) + " | "
              + " | ".join(f"{how} whole" for how in HOWS) + " |", "|---|---|---|---|---|---|---|"]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(
            str(r[how].get("cpu_s_per_1000_images_from_due", {}).get(name, "")) for how in HOWS) + " | "
            + " | ".join(str(r[how]["cpu_s_per_1000_images"].get(name, "")) for how in HOWS) + " |")
    lines.append("| total | " + " | ".join(
        f"{sum(r[how].get('cpu_s_per_1000_images_from_due', {}).values()):.3f}" for how in HOWS) + " | "
        + " | ".join(f"{sum(r[how]['cpu_s_per_1000_images'].values()):.3f}" for how in HOWS) + " |")
    polled = r["polling"]
    status_cpu = polled.get("cpu_s_per_1000_images_from_due", {}).get("status")
    per_read = (f"; the status process's CPU from due, all of its work included, is"
                f" {status_cpu * polled['images'] / 1000 / polled['reads'] * 1e6:.0f} µs per read"
                if status_cpu and polled.get("reads") else "")
    lines += ["", f"Polling: {polled.get('reads', 0):,} reads by the 16 connections (median round){per_read}."]
    lines += ["", f"Streams open on the status process during the streams burst: {r['streams'].get('streams_open')}"
              f" (one per job plus idle ones on far-future jobs). Webhooks: {r['webhooks'].get('deliveries')}"
              f" deliveries, {r['webhooks'].get('bad_signatures')} with a bad signature.", ""]
    return lines


def main() -> None:
    """`python -m tests.bench.observe`: this section alone, with BullMQ's burst in the same run."""
    import json

    from deploy.devstack.net import free_port
    from tests.bench import peers as peer_tools
    from tests.support.stack import Infra

    quick = os.environ.get("BENCH_QUICK") == "1"
    infra = Infra.start()
    port = free_port()
    images = peer_tools.start_image_server(port)
    base = f"http://127.0.0.1:{port}"
    try:
        limit = max(peer_tools.run_limit(base, 10_000, 64) for _ in range(2))
        server = infra.pg.url.rsplit("/", 1)[0]
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS peers")
            conn.execute("CREATE DATABASE peers")
        with peer_tools.PeerRunner(base, f"{server}/peers") as runner:
            bull, _ = runner.bullmq(2000 if quick else 10_000, lead=10)
            result = measure_observers(infra, base, quick, runner)
    finally:
        peer_tools.stop(images)
        infra.stop()
    print(json.dumps(result, indent=2))
    print("\n".join(observer_lines(result, (bull or {}).get("images_per_s"), limit, 2000 if quick else 10_000)))


if __name__ == "__main__":
    main()
