"""`Idempotency-Key` -> the job it created (`ingest_idempotency_keys`), with the event to
re-publish when the client retries. Keys are scoped by owner and stored hashed."""

from __future__ import annotations

import hashlib
import json

from services.ingest.domain import KeyReused
from shared.events import JobSubmitted
from shared.runtime import Runtime

# Retention (shared/retention.py): a key is forgotten `older_than_s` after it was first used; the
# same key then makes a new job.
EXPIRE_KEYS = (
    "DELETE FROM ingest_idempotency_keys WHERE key = ANY(ARRAY(SELECT key FROM ingest_idempotency_keys"
    " WHERE created_at < now() - make_interval(secs => %(older_than_s)s::float8)"
    " LIMIT %(batch)s FOR UPDATE SKIP LOCKED))")


def scoped_key(key: str, owner: str | None) -> str:
    """How a client's key is stored: scoped by its owner, hashed."""
    return hashlib.sha256(f"{owner or ''}:{key}".encode()).hexdigest()


class IdempotencyKeys:
    """The KeyStore port (services/ingest/ports.py) on PostgreSQL."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime  # its pool exists once the app has started

    async def remember(self, key: str, owner: str | None, raw: bytes, event: JobSubmitted) -> JobSubmitted:
        """Store key -> event and return it, or return the event first stored under this key;
        KeyReused if that first request had another body."""
        scoped = scoped_key(key, owner)
        digest = hashlib.sha256(raw).hexdigest()
        async with self._runtime.pool.connection() as conn:
            row = await (await conn.execute(
                "INSERT INTO ingest_idempotency_keys (key, job_id, event) VALUES (%s, %s, %s)"
                " ON CONFLICT (key) DO NOTHING RETURNING job_id",
                (scoped, event.job_id, json.dumps({"body_sha256": digest, "event": event.model_dump(mode="json")})),
            )).fetchone()
            if row is not None:
                return event
            stored = await (await conn.execute(
                "SELECT event FROM ingest_idempotency_keys WHERE key = %s", (scoped,))).fetchone()
        if stored is None:  # expired between the two statements: the key is free again
            return await self.remember(key, owner, raw, event)
        if stored[0]["body_sha256"] != digest:
            raise KeyReused()
        return JobSubmitted.model_validate(stored[0]["event"])
