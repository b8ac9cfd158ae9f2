"""Session fixtures: one real Kafka broker and one real PostgreSQL for the whole run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.stores import import_stores
from tests.support.stack import Infra

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
