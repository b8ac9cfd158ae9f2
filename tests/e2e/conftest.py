"""One stack of real services (two processors) for the e2e tests, under its own topic prefix."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.client import Client
from tests.support.stack import Infra, Stack


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
