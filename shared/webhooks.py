"""Completion webhooks' secret: `WEBHOOK_SECRET` is `whsec_` + base64 (the Standard Webhooks
form). Read by ingest (a `callback_url` is accepted only when it is set) and by the status
service (which signs with it). Empty: webhooks are off. Anything else that is not such a secret
stops both services at start with one line that never shows the secret (shared/serve.py)."""

from __future__ import annotations

import base64
import binascii

from standardwebhooks import Webhook

PREFIX = "whsec_"
MIN_BYTES, MAX_BYTES = 24, 64  # what the Standard Webhooks specification recommends


class BadWebhookSecret(ValueError):
    """WEBHOOK_SECRET cannot be used; the message says why, never what it is."""


def parse_webhook_secret(value: str) -> Webhook | None:
    """The signer for `value`, or None when it is empty (webhooks off)."""
    value = value.strip()
    if not value:
        return None
    how = (f"WEBHOOK_SECRET: must be {PREFIX} followed by the base64 of {MIN_BYTES} to {MAX_BYTES} random"
           f" bytes, e.g. {PREFIX}$(head -c 32 /dev/urandom | base64)")
    if not value.startswith(PREFIX):
        raise BadWebhookSecret(how)
    encoded = value.removeprefix(PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BadWebhookSecret(how) from None
    if not MIN_BYTES <= len(key) <= MAX_BYTES:
        raise BadWebhookSecret(f"{how} (it holds {len(key)})")
    return Webhook(key)


def webhook_id_for(job_id: object) -> str:
    """The `webhook-id` of a job's completion message: the same on every attempt, so a receiver
    can drop repeats by it."""
    return f"msg_{job_id}"
