"""A stack per fault module (its own topic prefix), with the simulated GPU on so that work is
in flight when a fault is injected."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.client import Client
from tests.support.stack import Infra, Stack

SEED = 20261128


def run_fault_stack(infra: Infra, extra_env: dict[str, str] | None = None) -> Iterator[tuple[Stack, dict[str, Any]]]:
    """Two processors with the simulated GPU on (30-150 ms) so tasks are in flight at a fault."""
    running = Stack(infra, env={"PROCESSOR_GPU_DELAY_MS": "30-150", "IMAGE_CACHE_TTL_S": "0",
                                "PROCESSOR_CONCURRENCY": "16", **(extra_env or {})})
    try:
        yield running, running.start_all(processors=2)
    finally:
        running.stop()


@pytest.fixture(scope="module")
def fault_stack(infra: Infra) -> Iterator[tuple[Stack, dict[str, Any]]]:
    yield from run_fault_stack(infra)


@pytest.fixture()
def fault_client(fault_stack: tuple[Stack, dict[str, Any]]) -> Client:
    return Client(*fault_stack)


@pytest.fixture()
def rng(request: pytest.FixtureRequest) -> random.Random:
    return random.Random(f"{SEED}:{request.node.name}")
