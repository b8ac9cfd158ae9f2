"""The production fold (services/status/adapters/view.py) run on a scratch database: what the
status view says after replaying a list of events. The fault tests compare the live view with
a replay of the topics; the fold's properties (idempotent, order-independent) are tested
against it too. There is no second, test-only fold."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from uuid import UUID

import psycopg

from services.status.adapters import view
from services.status.domain import FAILED, first_error_per_store
from shared.db import apply_migrations

Summary = tuple[str, int, int, int, list[dict[str, str]]]  # status, total, succeeded, failed, errors


class ScratchView:
    """A throw-away database with the schema; `fold` events into it, read `summary`."""

    def __init__(self, server_url: str) -> None:
        """`server_url`: any database URL on the server (its database part is replaced)."""
        self._server = server_url.rsplit("/", 1)[0]
        self._name = f"fold_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"{self._server}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self._name}"')
        self.url = f"{self._server}/{self._name}"
        asyncio.run(apply_migrations(self.url))

    def fold(self, events: list[Any], batch_size: int | None = None) -> None:
        """Fold `events` in batches of `batch_size` (all at once by default), a transaction each,
        as the projector does."""
        asyncio.run(self._fold(events, batch_size or max(1, len(events))))

    async def _fold(self, events: list[Any], size: int) -> None:
        async with await psycopg.AsyncConnection.connect(self.url) as conn:
            for start in range(0, len(events), size):
                async with conn.transaction():
                    await view.fold(conn, events[start:start + size])

    def summaries(self, job_ids: list[UUID] | None = None) -> dict[UUID, Summary]:
        with psycopg.connect(self.url) as conn:
            rows = conn.execute("SELECT job_id, status, total_images, succeeded, failed FROM status_jobs"
                                " WHERE %s::uuid[] IS NULL OR job_id = ANY(%s)", (job_ids, job_ids)).fetchall()
            failures = conn.execute("SELECT job_id, store_id, visit_index, image_index, error FROM status_outcomes"
                                    " WHERE NOT ok").fetchall()
        errors: dict[UUID, list[tuple[str, int, int, str]]] = {}
        for job_id, *failure in failures:
            errors.setdefault(job_id, []).append(tuple(failure))  # type: ignore[arg-type]
        return {job_id: (status, total, ok, bad, first_error_per_store(errors.get(job_id, [])) if status == FAILED
                         else []) for job_id, status, total, ok, bad in rows}

    def summary(self, job_id: UUID) -> Summary:
        return self.summaries([job_id])[job_id]

    def drop(self) -> None:
        with psycopg.connect(f"{self._server}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self._name}" WITH (FORCE)')
