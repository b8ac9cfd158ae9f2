"""Kafka and PostgreSQL restart under load: services report not-ready, retry, and recover
without being restarted themselves.

These tests restart servers, so they run on a broker and a database of their own: the
session's shared stack (e2e, fuzzing, dashboards) is not disturbed by them."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.faults.conftest import run_fault_stack
from tests.support.client import Client
from tests.support.invariants import assert_promises_kept, submit_batch
from tests.support.stack import Infra, Stack
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def fault_stack() -> Iterator[tuple[Stack, dict[str, Any]]]:
    own = Infra.start()
    try:
        yield from run_fault_stack(own)
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
