"""Session fixtures: one real Kafka broker and one real PostgreSQL for the whole run, and one
stack of the real services (two processors) shared by the e2e and fuzz tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.client import Client
from tests.support.stack import STORE_MASTER, Infra, Stack

__all__ = ["STORE_MASTER"]


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """The servers; each Stack creates its own database on this PostgreSQL."""
    started = Infra.start()
    try:
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
