"""A rolling restart under load: every service is stopped with SIGTERM and started again, one
at a time, while the project's client (`imagejobs_client/client.py`, what `imagejobs submit` runs)
submits 50 jobs a second, each with an Idempotency-Key of its own. Every submit ends with
exactly one job: lost 0, duplicated 0.

There is one ingest process and no load balancer, so while ingest restarts its port refuses
connections (and a request caught by the stop may be dropped unanswered): the client retries
those with the same key for up to a minute, as a user's would. A job withdrawn behind a 503
is allowed on the jobs topic (`JobWithdrawn`, never run); two live jobs for one key are not.
The figures are printed (`pytest -s`)."""

from __future__ import annotations

import random
import signal
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import psycopg
import pytest

from imagejobs_client.client import ApiError, ImagejobsClient
from shared.events import FINAL_STATUSES
from tests.support.client import Client
from tests.support.invariants import Batch, assert_promises_kept, read_all
from tests.support.stack import Infra, ServiceProcess, Stack
from tests.support.waiting import wait_for

RATE = 50.0  # submits a second, open loop: each on schedule, whatever the earlier ones met
GAP_S = 3.0  # load between one service being ready again and the next one's SIGTERM
ORDER = ("processor", "scheduler", "ingest", "processor", "status", "storestats")
SEED = 20261206


@dataclass
class CountingClient(ImagejobsClient):
    """The project's client, counting the attempts of each Idempotency-Key and what failed ones met."""

    attempts: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        key = kwargs.get("headers", {}).get("Idempotency-Key", "")
        with self.lock:
            self.attempts[key] += 1
        try:
            return super()._call(method, url, **kwargs)
        except ApiError as exc:
            with self.lock:
                self.failures["no answer" if str(exc).startswith("cannot reach") else str(exc)[:60]] += 1
            raise


class Load:
    """Submits at RATE from a ticker thread, each submit a task of its own: 1-2 images tagged
    with the submit's key, a third of the jobs due within 3 s (the rest now)."""

    def __init__(self, client: Client, cli: CountingClient) -> None:
        self.client, self.cli = client, cli
        self.rng = random.Random(SEED)
        self.pool = ThreadPoolExecutor(max_workers=800)  # enough for every submit retrying through an outage
        self.submits: dict[str, Future[tuple[dict[str, Any], float]]] = {}
        self.images: dict[str, int] = {}
        self.stopping = threading.Event()
        self.ticker = threading.Thread(target=self._tick, daemon=True)
        self.started = self.ended = 0.0

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        self.ticker.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.ticker.join()
        self.ended = time.monotonic()
        self.pool.shutdown(wait=True)  # every submit answered or given up

    def _tick(self) -> None:
        while not self.stopping.is_set():
            due = self.started + len(self.submits) / RATE
            if due > time.monotonic():
                self.stopping.wait(due - time.monotonic())
                continue
            key = uuid.uuid4().hex
            body = self._job(key)
            self.images[key] = len(body["visits"][0]["image_url"])
            self.submits[key] = self.pool.submit(self._submit, key, body)

    def _job(self, key: str) -> dict[str, Any]:
        urls = [self.client.image(self.rng.randint(10, 300), self.rng.randint(10, 300)) + f"?key={key}&i={i}"
                for i in range(self.rng.randint(1, 2))]
        body: dict[str, Any] = {"count": 1, "visits": [{"store_id": "S00339218", "image_url": urls,
                                                          "visit_time": "10:00"}]}
        if self.rng.random() < 1 / 3:
            body["scheduled_time"] = (datetime.now(UTC) + timedelta(seconds=self.rng.uniform(0.5, 3))).isoformat()
        return body

    def _submit(self, key: str, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
        started = time.monotonic()
        answer = self.cli.submit(body, idempotency_key=key, retry_for_s=60)
        return answer, time.monotonic() - started


@pytest.fixture(scope="module")
def rolling(infra: Infra) -> Iterator[Client]:
    """Every service: ingest, scheduler, status, two processors (simulated GPU on, so tasks are
    in flight at each stop) and the store statistics."""
    running = Stack(infra, env={"PROCESSOR_GPU_DELAY_MS": "30-150", "IMAGE_CACHE_TTL_S": "0",
                                "PROCESSOR_CONCURRENCY": "16"})
    try:
        services = running.start_all(processors=2)
        running.wait_ready(running.start_service("storestats"))
        running.wait_partitions_shared()
        yield Client(running, services)
    finally:
        running.stop()


def _restart_gracefully(stack: Stack, victim: ServiceProcess) -> tuple[float, float]:
    """SIGTERM, wait for the exit (a graceful one: no kill needed), start it again on its port,
    wait until ready. Returns (seconds to stop, seconds to ready)."""
    began = time.monotonic()
    victim.process.send_signal(signal.SIGTERM)
    code = victim.process.wait(40)
    stopped = time.monotonic()
    # uvicorn re-raises SIGTERM after its graceful shutdown, so the exit status may be -15
    assert code in (0, -signal.SIGTERM), f"{victim.name} exited with {code}:\n{victim.log_tail()}"
    stack.processes.remove(victim)
    fresh = stack.start_service(victim.name, port=victim.port)
    stack.wait_ready(fresh)
    return stopped - began, time.monotonic() - stopped


def _roll(stack: Stack) -> list[tuple[str, float, float]]:
    """Each service of ORDER in turn, GAP_S of load before each; the two processors are
    different processes (the first one not yet restarted)."""
    original = list(stack.processes)
    restarts = []
    for name in ORDER:
        time.sleep(GAP_S)  # the load runs on between restarts (pacing, not a wait for a condition)
        victim = next(p for p in original if p.name == name and p in stack.processes)
        restarts.append((name, *_restart_gracefully(stack, victim)))
    time.sleep(GAP_S)  # and after the last one
    return restarts


def _wait_completed(cli: ImagejobsClient, job_ids: list[str], deadline_s: float) -> Counter[str]:
    """Each job's final status, read from the status API; counted by status."""
    def final(job_id: str) -> str:
        def probe() -> str | None:
            status = str(cli.status(job_id)["status"])
            return status if status in FINAL_STATUSES else None
        return wait_for(probe, deadline_s, f"job {job_id} to be final", every_s=0.2)
    with ThreadPoolExecutor(8) as pool:
        return Counter(pool.map(final, job_ids))


def _live_jobs_per_key(client: Client) -> tuple[dict[str, set[str]], int]:
    """key -> the jobs submitted for it on the jobs topic and not withdrawn; and how many were withdrawn."""
    submitted: dict[str, set[str]] = {}
    withdrawn: set[str] = set()
    for _, event in read_all(client, ["jobs"])["jobs"]:
        if event.type == "JobSubmitted":
            key = parse_qs(urlsplit(event.visits[0].image_urls[0]).query)["key"][0]
            submitted.setdefault(key, set()).add(str(event.job_id))
        elif event.type == "JobWithdrawn":
            withdrawn.add(str(event.job_id))
    return {key: jobs - withdrawn for key, jobs in submitted.items()}, len(withdrawn)


@pytest.mark.timeout(300)  # ~130 s: six restarts (the scheduler's stop alone can take its 15 s bound)
def test_a_rolling_restart_of_every_service_under_50_submits_a_second_loses_and_doubles_nothing(
        rolling: Client) -> None:
    began = time.monotonic()
    cli = CountingClient(ingest_url=rolling.ingest, status_url=rolling.status_url, api_key=None, timeout_s=30)
    with Load(rolling, cli) as load:
        restarts = _roll(rolling.stack)
    gave_up = {key: repr(f.exception()) for key, f in load.submits.items() if f.exception() is not None}
    assert not gave_up, f"{len(gave_up)} submits raised after their retries: {list(gave_up.items())[:5]}"
    answers = {key: f.result()[0] for key, f in load.submits.items()}
    job_of = {key: str(answer["job_id"]) for key, answer in answers.items()}
    assert len(set(job_of.values())) == len(job_of), "two keys were answered with the same job"

    live, withdrawn = _live_jobs_per_key(rolling)
    doubled = sorted(key for key, jobs in live.items() if len(jobs) > 1)
    lost_on_topic = sorted(key for key, job in job_of.items() if live.get(key) != {job})
    assert not doubled, f"keys with two live jobs on the jobs topic: {[(k, live[k]) for k in doubled[:5]]}"
    assert not lost_on_topic, f"keys whose answered job is not their one live job: {lost_on_topic[:5]}"
    assert set(live) == set(job_of), "a job on the topic for a key that was never submitted"

    finals = _wait_completed(cli, list(job_of.values()), deadline_s=120)
    assert finals == Counter({"completed": len(job_of)}), finals
    report = assert_promises_kept(rolling, _batch(answers, load.images), deadline_s=120)
    assert report["lost"] == 0 and report["duplicates"] == 0
    assert _stray_results(rolling, set(job_of.values())) == 0, "results of a job no submit was answered with"

    attempts = [cli.attempts[key] for key in job_of]
    offered_s = load.ended - load.started
    assert len(job_of) >= 0.95 * RATE * offered_s, f"{len(job_of)} submits in {offered_s:.0f}s: not {RATE}/s"
    assert max(attempts) > 1, "no submit had to retry: the ingest restart was not felt"
    latencies = sorted(f.result()[1] for f in load.submits.values())
    print(f"\nrolling restart under load: {len(job_of)} submits in {offered_s:.1f}s "
          f"({len(job_of) / offered_s:.1f}/s), {len(set(job_of.values()))} jobs, {report['images']} images; "
          f"lost {report['lost'] + len(lost_on_topic)}, duplicated {report['duplicates'] + len(doubled)}; "
          f"{sum(a > 1 for a in attempts)} submits retried, max {max(attempts)} attempts, "
          f"{withdrawn} withdrawn behind a 503; failed attempts {dict(cli.failures)}; submit latency "
          f"p50 {_ms(statistics.median(latencies))}, p99 {_ms(latencies[int(0.99 * len(latencies))])}, "
          f"max {_ms(latencies[-1])}; restarts (stop s, ready s) "
          f"{[(n, round(s, 1), round(r, 1)) for n, s, r in restarts]}; test {time.monotonic() - began:.0f}s")
    cli.close()


def _batch(answers: dict[str, dict[str, Any]], images: dict[str, int]) -> Batch:
    """The answered jobs as the invariants expect them: task ids and scheduled times."""
    batch = Batch()
    for key, answer in answers.items():
        job_id = str(answer["job_id"])
        batch.scheduled[job_id] = datetime.fromisoformat(answer["scheduled_time"].replace("Z", "+00:00"))
        batch.tasks[job_id] = {f"{job_id}:0:{i}" for i in range(images[key])}
    return batch


def _stray_results(client: Client, job_ids: set[str]) -> int:
    """Result rows of any other job (a withdrawn one that ran, say)."""
    with psycopg.connect(client.stack.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM processor_results WHERE NOT job_id = ANY(%s)",
                           ([UUID(j) for j in job_ids],)).fetchone()
    return int(row[0]) if row else 0


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"
