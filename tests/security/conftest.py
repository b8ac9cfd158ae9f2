"""Stacks for the hostile-input suite: tight image limits; no private networks; API keys."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.client import Client
from tests.support.stack import Infra, Stack

API_KEYS = ("alpha-key-7f3a9c", "beta-key-51e2d0")
TENANTS = ("alpha", "beta")  # API_KEYS[i] is a key of TENANTS[i]


def _stack(infra: Infra, env: dict[str, str]) -> Iterator[Client]:
    running = Stack(infra, env=env)
    try:
        yield Client(running, running.start_all(processors=1))
    finally:
        running.stop()


@pytest.fixture(scope="module")
def hostile_client(infra: Infra) -> Iterator[Client]:
    yield from _stack(infra, {"IMAGE_MAX_BYTES": "1000000", "IMAGE_TOTAL_TIMEOUT_S": "2",
                              "IMAGE_ATTEMPTS": "2", "IMAGE_CACHE_TTL_S": "0"})


@pytest.fixture(scope="module")
def guarded_client(infra: Infra) -> Iterator[Client]:
    yield from _stack(infra, {"IMAGE_ALLOW_PRIVATE_NETWORKS": "false"})


@pytest.fixture(scope="module")
def keyed_stack(infra: Infra) -> Iterator[Client]:
    yield from _stack(infra, {"API_KEYS": ",".join(f"{key}:{tenant}" for key, tenant in zip(API_KEYS, TENANTS,
                                                                                             strict=True))})


def one_image_job(url: str, store: str = "S00339218") -> dict[str, Any]:
    return {"count": 1, "visits": [{"store_id": store, "image_url": [url], "visit_time": "10:00"}]}
