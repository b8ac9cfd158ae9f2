"""Kafka and PostgreSQL restart under load: services report not-ready, retry, and recover
without being restarted themselves.

These tests restart servers, so they run on a broker and a database of their own: the
session's shared stack (e2e, fuzzing, dashboards) is not disturbed by them."""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from imagejobs_client.client import ImagejobsClient
from tests.faults.conftest import run_fault_stack
from tests.support.client import Client
from tests.support.invariants import assert_promises_kept, submit_batch
from tests.support.stack import Infra, Stack
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def fault_stack() -> Iterator[tuple[Stack, dict[str, Any]]]:
    own = Infra.start()
    try:  # a short publish deadline: the paused-broker test waits for it three times or more
        yield from run_fault_stack(own, {"INGEST_PUBLISH_TIMEOUT_S": "2"})
    finally:
        own.stop()


def _ready(url: str) -> int:
    try:
        return httpx.get(url + "/readyz", timeout=3).status_code
    except httpx.HTTPError:
        return 0


def test_kafka_broker_restart_under_load(fault_client: Client, rng: random.Random) -> None:
    kafka = fault_client.stack.infra.kafka
    batch = submit_batch(fault_client, rng, jobs=20, ahead_s=2.0)
    kafka.stop()
    wait_for(lambda: _ready(fault_client.ingest) == 503, 20, "ingest to report not ready")
    time.sleep(1.0)  # the outage itself: the broker stays down for a moment (not a wait for a condition)
    kafka.start()
    kafka.wait_ready()
    wait_for(lambda: _ready(fault_client.ingest) == 200, 60, "ingest to be ready again")
    report = assert_promises_kept(fault_client, batch, deadline_s=180)
    assert report["lost"] == 0 and report["duplicates"] == 0


def test_postgres_restart_under_load(fault_client: Client, rng: random.Random) -> None:
    pg = fault_client.stack.infra.pg
    batch = submit_batch(fault_client, rng, jobs=20, ahead_s=2.0)
    pg.stop()
    wait_for(lambda: _ready(fault_client.status_url) == 503, 20, "status to report not ready")
    time.sleep(1.0)  # the outage itself
    pg.start()
    pg.wait_ready()
    wait_for(lambda: _ready(fault_client.status_url) == 200, 60, "status to be ready again")
    report = assert_promises_kept(fault_client, batch, deadline_s=180)
    assert report["lost"] == 0 and report["duplicates"] == 0


def test_a_503_under_a_paused_broker_is_true_and_the_clients_retry_makes_exactly_one_job(
        fault_client: Client) -> None:
    """The broker is frozen (SIGSTOP) with submits in flight: ingest answers 503 once its
    deadline passes, although the records sit in the broker's socket buffer and are written
    when it thaws. Those jobs never run and are never visible (withdrawn before the scheduler
    admitted them); the `imagejobs` client, retrying its 503s with one Idempotency-Key, ends
    with exactly one job, which completes."""
    tag = uuid.uuid4().hex
    url = fault_client.image(37, 41) + f"?{tag}"
    body = {"count": 1, "visits": [{"store_id": "S00339218", "image_url": [url], "visit_time": "10:00"}]}
    kafka = fault_client.stack.infra.kafka
    assert kafka.process is not None
    withdrawn_before = _withdrawals(fault_client)
    os.kill(kafka.process.pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(1) as pool:
            cli = pool.submit(_cli_submit, fault_client, body)
            raw = fault_client.submit(body)  # no key: its 503 must be true all the same
            assert raw.status_code == 503 and raw.headers["retry-after"] == "1", raw.text
            wait_for(lambda: _withdrawals(fault_client) >= withdrawn_before + 2, 30,
                     "the client's first attempt to have been withdrawn too")
            os.kill(kafka.process.pid, signal.SIGCONT)
            job_id = cli.result(timeout=90)
    finally:
        os.kill(kafka.process.pid, signal.SIGCONT)
    assert fault_client.wait_final(job_id, 90)["status"] == "completed"
    written = wait_for(lambda: _written(fault_client, tag) if len(_written(fault_client, tag)) >= 2 else None, 60,
                       "the late records to be written once the broker thawed")
    assert job_id in written  # and the others are the 503'd attempts, written late
    wait_for(lambda: _scheduled(fault_client, tag) == [job_id], 30, "the scheduler to hold only the accepted job")
    for late in written - {job_id}:
        assert fault_client.status(late).status_code == 404  # withdrawn: never visible
    wait_for(lambda: _result_jobs(fault_client, tag) == [job_id], 30, "one job's results, and only one")


def _cli_submit(client: Client, body: dict[str, Any]) -> str:
    answer = ImagejobsClient(ingest_url=client.ingest, status_url=client.status_url, api_key=None, timeout_s=30)
    return str(answer.submit(body, retry_for_s=80)["job_id"])


def _withdrawals(client: Client) -> int:
    """Records withdrawn so far (their 503s said: not accepted)."""
    with psycopg.connect(client.stack.database_url) as conn:
        return int(conn.execute("SELECT count(*) FROM admissions WHERE NOT admitted").fetchone()[0])


def _written(client: Client, tag: str) -> set[str]:
    return {str(e.job_id) for _, e in client.topic_events_matching("jobs", tag) if e.type == "JobSubmitted"}


def _scheduled(client: Client, tag: str) -> list[str]:
    with psycopg.connect(client.stack.database_url) as conn:
        return [str(r[0]) for r in conn.execute(
            "SELECT job_id FROM scheduler_jobs WHERE event::text LIKE %s", (f"%{tag}%",)).fetchall()]


def _result_jobs(client: Client, tag: str) -> list[str]:
    with psycopg.connect(client.stack.database_url) as conn:
        return sorted({str(r[0]) for r in conn.execute(
            "SELECT job_id FROM processor_results WHERE image_url LIKE %s", (f"%{tag}%",)).fetchall()})
