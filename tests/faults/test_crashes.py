"""Processes die mid-flight (kill -9, SIGTERM); nothing is lost, nothing happens twice."""

from __future__ import annotations

import os
import random
import signal
from typing import Any

import psycopg

from tests.support.client import Client
from tests.support.invariants import assert_promises_kept, submit_batch
from tests.support.stack import Stack
from tests.support.waiting import wait_for


def _results_so_far(client: Client) -> int:
    with psycopg.connect(client.stack.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM processor_results").fetchone()
    return int(row[0]) if row else 0


def _service(stack: Stack, name: str) -> Any:
    return next(p for p in stack.processes if p.name == name and p.process.poll() is None)


def test_kill_9_a_processor_with_tasks_in_flight(fault_client: Client, rng: random.Random) -> None:
    stack = fault_client.stack
    for round_ in range(int(os.environ.get("SOAK_ROUNDS", "3"))):
        start = _results_so_far(fault_client)
        batch = submit_batch(fault_client, rng, jobs=15)
        target = start + rng.randint(1, max(2, batch.images // 3))
        wait_for(lambda t=target: _results_so_far(fault_client) >= t, 60, "some results")
        victim = [p for p in stack.processes if p.name == "processor" and p.process.poll() is None][round_ % 2]
        stack.restart(victim, signal.SIGKILL)
        report = assert_promises_kept(fault_client, batch)
        assert report["lost"] == 0 and report["duplicates"] == 0


def test_kill_9_the_scheduler_while_jobs_are_pending_and_releasing(fault_client: Client, rng: random.Random) -> None:
    stack = fault_client.stack
    batch = submit_batch(fault_client, rng, jobs=30, ahead_s=4.0)
    wait_for(lambda: _results_so_far(fault_client) > 0, 30, "the first releases")
    stack.restart(_service(stack, "scheduler"), signal.SIGKILL)
    report = assert_promises_kept(fault_client, batch)
    assert report["lost"] == 0 and report["duplicates"] == 0


def test_kill_9_the_status_service_and_its_view_catches_up(fault_client: Client, rng: random.Random) -> None:
    stack = fault_client.stack
    batch = submit_batch(fault_client, rng, jobs=20)
    wait_for(lambda: _results_so_far(fault_client) > 0, 30, "some results")
    stack.restart(_service(stack, "status"), signal.SIGKILL)
    assert_promises_kept(fault_client, batch)


def test_sigterm_on_a_processor_drains_its_tasks(fault_client: Client, rng: random.Random) -> None:
    stack = fault_client.stack
    batch = submit_batch(fault_client, rng, jobs=15)
    start = _results_so_far(fault_client)
    wait_for(lambda: _results_so_far(fault_client) > start, 30, "some results")
    victim = _service(stack, "processor")
    victim.process.send_signal(signal.SIGTERM)
    # uvicorn re-raises SIGTERM after its graceful shutdown, so the exit status is -15
    assert victim.process.wait(40) in (0, -signal.SIGTERM), victim.log_tail()
    assert "Application shutdown complete" in victim.log_tail(), victim.log_tail()
    stack.processes.remove(victim)
    stack.wait_ready(stack.start_service("processor", port=victim.port))
    report = assert_promises_kept(fault_client, batch)
    assert report["lost"] == 0 and report["duplicates"] == 0


def test_dropping_the_status_view_and_replaying_gives_the_same_answers(fault_client: Client,
                                                                         rng: random.Random) -> None:
    stack = fault_client.stack
    batch = submit_batch(fault_client, rng, jobs=10)
    assert_promises_kept(fault_client, batch)
    before = {j: fault_client.status(j).json() for j in batch.tasks}
    status = _service(stack, "status")
    status.stop(signal.SIGTERM)
    with psycopg.connect(stack.database_url) as conn:
        conn.execute("TRUNCATE status_jobs, status_outcomes")
        conn.execute("DELETE FROM consumer_offsets WHERE consumer = 'status'")
    stack.processes.remove(status)
    stack.wait_ready(stack.start_service("status", port=status.port))

    def replayed() -> bool:  # the replay runs in the background: wait until it has caught up
        return {j: fault_client.status(j).json() for j in batch.tasks} == before
    wait_for(replayed, 60, "the replayed view to give the same answers as before")
