"""Ingest settings (environment variables; see the README's table)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from shared.settings import CommonSettings


class IngestSettings(CommonSettings):
    ingest_port: int = 8000
    ingest_max_body_bytes: int = 4 * 1024 * 1024
    ingest_max_images: int = 10_000
    ingest_max_schedule_days: int = 366
    ingest_publish_timeout_s: float = 10.0
    api_keys: str = ""  # "key:tenant[,key:tenant…]" (shared/auth.py); empty: no authentication
    # Per tenant: images accepted and not yet final (0: off), and images per second accepted
    # by each ingest process (token bucket; 0 or empty: off)
    tenant_max_pending_images: int = Field(1_000_000, ge=0)
    tenant_submit_rate: float = Field(0.0, ge=0)
    # `whsec_` + base64 (shared/webhooks.py): a submit may then name a callback_url, which the
    # status service calls with the final status, signed with it. Empty: webhooks are off.
    webhook_secret: str = ""
    # CPU priority (Unix niceness): the front door ahead of everything else on a shared machine.
    # Raising priority needs root or CAP_SYS_NICE; without it ingest stays at 0 and says so.
    ingest_nice: int = -5

    @field_validator("tenant_submit_rate", mode="before")
    @classmethod
    def _empty_is_off(cls, value: Any) -> Any:
        return 0.0 if isinstance(value, str) and not value.strip() else value
