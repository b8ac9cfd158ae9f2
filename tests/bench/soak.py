"""The soak (issue 22, `make soak-load`): the replaced system's load mix at 5x, 100 submits/s of
1-10 visits (one image each, from the stack's own sample image server, every URL new so each
image is downloaded), simulated GPU on, for 30 minutes, on the stack as `make run` starts it
with a 5-minute retention. One line of figures a minute; at the end a verdict on each criterion,
a plot and (with --docs) the section of docs/benchmarks.md.

Submits are open loop: request i is sent at start + i/rate whether or not earlier ones were
answered, and timed from that moment. Each job is due 5 s after it is submitted, so release
lateness is the scheduler's own (its `imagejobs_scheduler_lateness_seconds` histogram, scraped
each minute). Every accepted job is asked for (batch status, 1,000 ids a request) until it is
final, at most a few minutes after it was accepted, before retention forgets it; after the load
a drain waits for the last ones. Errors: submits not answered 200, jobs lost or ending `failed`,
jobs not final after the drain, and ERROR lines (or stack traces) in any program's log.

The load mix at 5x is ~550 images/s; with 100-400 ms of simulated GPU per image, 2 processors
of the default 32 GPU slots bound the stack at 256 images/s, so the soak runs them with
PROCESSOR_CONCURRENCY=96 (bound 768/s); every other setting is `make run`'s. Kafka deletes
whole segments, so the soak also rolls every topic's segments each minute and keeps the
status topic's tombstones for the retention rather than a day (`roll_segments`).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import psycopg
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from prometheus_client.parser import text_string_to_metric_families

from shared.events import FINAL_STATUSES
from shared.machine import busy_share, machine_cpu_s
from tests.bench import soak_report as report
from tests.bench.soak_stack import HZ, Target, cpu_ticks, disk_mib, errors_in, rss_mib
from tests.bench.stages import quantile
from tests.bench.timing import pct

SIZES = [(640, 480), (800, 600), (1024, 768), (1280, 720), (550, 368)]
LEAD_S = 5.0  # each job is due this long after it is submitted
LOST_AFTER_S = 240.0  # accepted this long and still unknown to the status API: lost


def soak_settings(retention_s: int, concurrency: int) -> dict[str, str]:
    """`make run`'s settings but the retention, the same for every store: jobs, topics, and the
    images store statistics remember to recognise repeats (7 days by default: at the soak's rate a
    table growing by ~2.5 MiB a minute for the whole run), pruned each minute rather than 10."""
    return {"JOB_RETENTION_S": str(retention_s), "RETENTION_SLACK_S": "60", "KAFKA_TOPIC_RETENTION_S": str(retention_s),
            "STORESTATS_KEEP_S": str(retention_s), "STORESTATS_PRUNE_EVERY_S": "60",
            "PROCESSOR_GPU_DELAY_MS": "100-400", "PROCESSOR_CONCURRENCY": str(concurrency)}


def body(rng: random.Random, images: str, i: int) -> dict[str, Any]:
    """1-10 visits of one image each, every URL new (`?n=`: the server ignores it, the
    processors' dimension cache does not); due LEAD_S from now."""
    visits = []
    for v in range(rng.randint(1, 10)):
        w, h = rng.choice(SIZES)
        url = f"{images}/img/{w}x{h}.jpg?n={i}.{v}"
        visits.append({"store_id": "S00339218", "visit_time": "10:00", "image_url": [url]})
    due = datetime.now(UTC) + timedelta(seconds=LEAD_S)
    return {"count": len(visits), "visits": visits, "scheduled_time": due.isoformat()}


@dataclass
class Soak:
    target: Target
    rate: float
    tick_s: float = 60.0
    codes: Counter[str] = field(default_factory=Counter)
    latencies: dict[int, list[float]] = field(default_factory=dict)  # minute -> submit seconds
    accepted: dict[str, float] = field(default_factory=dict)  # job id -> monotonic time accepted
    pending: dict[str, float] = field(default_factory=dict)  # not yet seen final
    outcomes: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    rows: list[report.Minute] = field(default_factory=list)

    def errors(self, log_errors: int) -> int:
        return sum(n for c, n in self.codes.items() if c != "200") + self.lost + self.outcomes["failed"] + log_errors

    async def submit(self, session: aiohttp.ClientSession, rng: random.Random, i: int, due: float,
                     start: float) -> None:
        payload = body(rng, self.target.images, i)
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        try:
            async with session.post(f"{self.target.ingest}/processJob", json=payload, headers=headers) as response:
                answer = await response.json(content_type=None)
                code = str(response.status)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            code = f"no answer ({type(exc).__name__})"
        self.codes[code] += 1
        if code == "200":
            self.latencies.setdefault(int((due - start) // self.tick_s), []).append(time.perf_counter() - due)
            self.accepted[answer["job_id"]] = self.pending[answer["job_id"]] = time.monotonic()

    async def load(self, session: aiohttp.ClientSession, start: float, seconds: float, seed: int) -> None:
        """Open loop: request i starts at start + i/rate (all due ones at once if this is late)."""
        rng, in_flight = random.Random(seed), set()
        for i in range(int(seconds * self.rate)):
            due = start + i / self.rate
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.submit(session, rng, i, due, start))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight)

    async def confirm_final(self, session: aiohttp.ClientSession, older_than_s: float) -> None:
        """Ask for every pending job accepted at least `older_than_s` ago; drop the final ones."""
        now = time.monotonic()
        ids = [j for j, at in self.pending.items() if now - at >= older_than_s]
        for k in range(0, len(ids), 1000):
            try:
                async with session.post(f"{self.target.status}/api/status", json={"job_ids": ids[k:k + 1000]}) as r:
                    answer = await r.json() if r.status == 200 else {"jobs": [], "not_found": []}
            except (TimeoutError, aiohttp.ClientError):
                continue  # asked again next time
            for job in answer["jobs"]:
                if job["status"] in FINAL_STATUSES and self.pending.pop(job["job_id"], None) is not None:
                    self.outcomes[job["status"]] += 1
            for job_id in answer["not_found"]:
                if now - self.pending.get(job_id, now) > LOST_AFTER_S:
                    del self.pending[job_id]
                    self.lost += 1


def lateness_buckets(text: str) -> dict[float, float]:
    out: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "imagejobs_scheduler_lateness_seconds":
            for s in family.samples:
                if s.name.endswith("_bucket"):
                    out[float(s.labels["le"])] = out.get(float(s.labels["le"]), 0.0) + s.value
    return out


async def pg_mib(database_url: str) -> float:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        size = (await (await conn.execute("SELECT pg_database_size(current_database())")).fetchone())[0]  # type: ignore[index]
    return round(size / 2**20, 1)


def _readings(target: Target) -> tuple[dict[str, float], float, int, tuple[int, int], dict[str, int]]:
    """What is read from /proc and the disk (in a thread, off the load's event loop)."""
    pids = target.pids()
    rss = {name: rss_mib(pid) for name, pid in pids.items()}
    own = os.times()  # this process alone (the stack is its child)
    ticks = {**cpu_ticks(pids), "soak client": round((own.user + own.system) * HZ)}
    return rss, disk_mib(target.kafka_dir), sum(errors_in(target.logs()).values()), machine_cpu_s() or (0.0, 0.0), ticks


async def minute_row(soak: Soak, session: aiohttp.ClientSession, minute: int, state: dict[str, Any]) -> report.Minute:
    async with session.get(f"{soak.target.scheduler}/metrics") as r:
        buckets = lateness_buckets(await r.text())
    delta = {b: c - state["buckets"].get(b, 0.0) for b, c in buckets.items()}
    await soak.confirm_final(session, older_than_s=30)
    rss, kafka, log_errors, cpu, ticks = await asyncio.to_thread(_readings, soak.target)
    lat = soak.latencies.get(minute - 1, [])
    busy = busy_share(state["cpu"], cpu)
    shares = {n: round(100 * (t - state["ticks"].get(n, 0)) / HZ / soak.tick_s) for n, t in ticks.items()}
    state.update(buckets=buckets, cpu=cpu, log_errors=log_errors, ticks=ticks)
    return report.Minute(
        minute=minute, submits_per_s=round(len(lat) / soak.tick_s, 1),
        submit_p50_ms=round(1000 * pct(lat, 0.5), 1) if lat else math.nan,
        submit_p99_ms=round(1000 * pct(lat, 0.99), 1) if lat else math.nan,
        lateness_p99_ms=round(1000 * quantile(delta, 0.99), 1) if delta else math.nan,
        accepted=len(soak.accepted), final=len(soak.accepted) - len(soak.pending) - soak.lost, rss_mib=rss,
        pg_mib=await pg_mib(soak.target.database_url), kafka_mib=kafka, errors=soak.errors(log_errors),
        cpu_pct=round(100 * busy, 1), cpu_share=shares, latencies=lat, lateness=delta)


@dataclass
class Result:
    soak: Soak
    not_final: int
    log_errors: dict[str, int]
    errors: int

    @property
    def rows(self) -> list[report.Minute]:
        return self.soak.rows


async def run(target: Target, seconds: float, rate: float, tick_s: float = 60.0, drain_s: float = 240.0,
              seed: int = 22, say: Callable[[str], None] = print) -> Result:
    """Load for `seconds`, a row every `tick_s`, then the drain; nothing asserted here."""
    soak = Soak(target, rate, tick_s)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64), timeout=timeout) as session:
        async with session.get(f"{target.scheduler}/metrics") as r:
            state: dict[str, Any] = {"buckets": lateness_buckets(await r.text()),
                                     "cpu": machine_cpu_s() or (0.0, 0.0), "ticks": {}}
        start = time.perf_counter() + 0.5
        load = asyncio.create_task(soak.load(session, start, seconds, seed))
        for minute in range(1, int(seconds // tick_s) + 1):
            await asyncio.sleep(max(0.0, start + minute * tick_s - time.perf_counter()))
            soak.rows.append(await minute_row(soak, session, minute, state))
            say(report.line(soak.rows[-1]))
        await load
        end = time.monotonic() + drain_s
        while soak.pending and time.monotonic() < end:
            await soak.confirm_final(session, older_than_s=0)
            if soak.pending:
                await asyncio.sleep(2)
    logs = errors_in(target.logs())
    say(f"after the drain: {len(soak.pending)} jobs not final, outcomes {dict(soak.outcomes)}, lost {soak.lost},"
        f" submit answers {dict(soak.codes)}, log errors {logs or 0}")
    return Result(soak, len(soak.pending), logs, soak.errors(sum(logs.values())))


async def roll_segments(bootstrap: str, retention_s: int) -> list[str]:
    """Every topic rolls a segment a minute (Kafka deletes and compacts closed segments only), and
    the status topic keeps tombstones for `retention_s`. AlterConfigs replaces a topic's dynamic
    configs, so each topic's own are sent along. Returns the topics changed."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = sorted(await admin.list_topics())
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
        changed = []
        for response in described:
            for _code, _message, _type, name, entries in response.resources:
                own = {e[0]: e[1] for e in entries if e[3] is False or e[3] == 1}  # v0 is_default, v1+ source
                own["segment.ms"] = "60000"
                if own.get("cleanup.policy") == "compact" and not name.startswith("__"):
                    own["delete.retention.ms"] = str(retention_s * 1000)
                await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, own)])
                changed.append(name)
        return changed
    finally:
        await admin.close()


def catch_up_minute(retention_s: int, slack_s: int = 60, every_s: int = 60) -> int:
    """By when both stores hold only what retention keeps: a job's rows go retention + slack +
    a sweep after it is final; its status topic records go with the tombstone written then, kept
    `retention_s`, once compaction reaches its segment (a minute for the roll, one for the cleaner)."""
    return math.ceil((2 * retention_s + slack_s + every_s + 120) / 60)


def main() -> None:
    import uvloop

    from deploy.devstack.paths import PROJECT_ROOT
    from tests.bench.soak_stack import DevStack

    parser = argparse.ArgumentParser(prog="python -m tests.bench.soak")
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--retention-s", type=int, default=300)
    parser.add_argument("--processor-concurrency", type=int, default=96)
    parser.add_argument("--docs", action="store_true", help="write docs/soak.png and docs/benchmarks.md's section")
    args = parser.parse_args()
    settings = soak_settings(args.retention_s, args.processor_concurrency)
    stack = DevStack(settings)
    print(f"starting the make run stack in {stack.root} with {settings}", flush=True)
    target = stack.start()
    try:
        print(f"segments roll each minute on {len(uvloop.run(roll_segments(target.bootstrap, args.retention_s)))}"
              " topics", flush=True)
        began = datetime.now(UTC)
        result = uvloop.run(run(target, args.minutes * 60, args.rate, say=lambda s: print(s, flush=True)))
    finally:
        stack.stop()
    found = report.verdicts(result.rows, all_final=result.not_final == 0 and result.soak.lost == 0,
                            not_final=result.not_final + result.soak.lost, errors=result.errors,
                            catch_up_min=catch_up_minute(args.retention_s))
    print("\n".join(report.verdict_lines(found)), flush=True)
    out = PROJECT_ROOT / "docs" if args.docs else stack.root
    title = f"soak {began:%Y-%m-%d %H:%M} UTC: {args.rate:g} submits/s, retention {args.retention_s} s"
    report.plot(result.rows, out / "soak.png", title)
    if args.docs:
        doc = PROJECT_ROOT / "docs" / "benchmarks.md"
        doc.write_text(report.replace_section(doc.read_text(), report.section(
            result.rows, found, intro(began, args, settings, result), "soak.png")))
    print(f"plot: {out / 'soak.png'}", flush=True)


def intro(began: datetime, args: argparse.Namespace, settings: dict[str, str], result: Result) -> str:
    codes = dict(result.soak.codes)
    return (f"Run on {began:%Y-%m-%d %H:%M} UTC ({os.uname().machine}, {os.cpu_count()} cores): "
            f"{args.minutes} minutes of {args.rate:g} submits/s, each job 1-10 visits of one new image"
            f" URL (mean 5.5 images, ~{5.5 * args.rate:.0f} images/s), due {LEAD_S:g} s after it is submitted, on the"
            " stack as `make run` starts it (every service, two processors, store statistics) with "
            + ", ".join(f"`{k}={v}`" for k, v in settings.items())
            + "; every topic rolls a segment a minute and the status topic keeps tombstones for the retention"
            f" (`tests/bench/soak.py`). Submit answers {codes}; job outcomes {dict(result.soak.outcomes)}; lost"
            f" {result.soak.lost}; not final after the drain {result.not_final}; log errors"
            f" {result.log_errors or 0}. RSS per service at the end of each minute (VmRSS); PG = the database's"
            " size (`pg_database_size`); Kafka = its log dir on disk; lateness p99 from the scheduler's histogram"
            " (bucket-interpolated); CPU = the whole machine.")


if __name__ == "__main__":
    main()
