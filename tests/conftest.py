"""Session fixtures: one real Kafka broker and one real PostgreSQL for the whole run, and one
stack of the real services (two processors) shared by the e2e and fuzz tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.stores import import_stores
from tests.support.client import Client
from tests.support.stack import Infra, Stack

STORE_MASTER = Path(__file__).resolve().parents[1] / "data" / "StoreMasterAssignment.csv"


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    started = Infra.start()
    try:
        import asyncio

        from shared.db import apply_migrations

        asyncio.run(apply_migrations(started.pg.url))
        import_stores(started.pg.url, STORE_MASTER)
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def stack(infra: Infra) -> Iterator[tuple[Stack, dict[str, Any]]]:
    running = Stack(infra)
    try:
        services = running.start_all(processors=2)
        yield running, services
    finally:
        running.stop()


@pytest.fixture(scope="session")
def client(stack: tuple[Stack, dict[str, Any]]) -> Client:
    return Client(*stack)
