"""Ingest settings (environment variables; see the README's table)."""

from __future__ import annotations

from shared.settings import CommonSettings


class IngestSettings(CommonSettings):
    ingest_port: int = 8000
    ingest_max_body_bytes: int = 4 * 1024 * 1024
    ingest_max_images: int = 10_000
    ingest_max_schedule_days: int = 366
    ingest_publish_timeout_s: float = 10.0
    api_keys: str = ""
    # CPU priority (Unix niceness): the front door ahead of everything else on a shared machine.
    # Raising priority needs root or CAP_SYS_NICE; without it ingest stays at 0 and says so.
    ingest_nice: int = -5  # comma-separated; empty: no authentication
