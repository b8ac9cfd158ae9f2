"""The ingest service's composition root: builds the adapters on the service's runtime (its
Kafka producer and PostgreSQL pool) and hands them to the submit use case as its ports. The only
module that imports both adapters and handlers; app.py serves what `build` returns."""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

from services.ingest.adapters.admissions import EXPIRE_ADMISSIONS, JobAdmissions
from services.ingest.adapters.idempotency import EXPIRE_KEYS, IdempotencyKeys
from services.ingest.adapters.kafka import JobPublisher
from services.ingest.adapters.pending import PendingReader
from services.ingest.handlers import SubmitJob, quotas_for
from services.ingest.settings import IngestSettings
from shared.api import Limits
from shared.auth import ApiKeys, parse_api_keys
from shared.retention import Expiry, statement_expiry
from shared.runtime import Runtime
from shared.webhooks import parse_webhook_secret


@dataclass(frozen=True)
class Ingest:
    """What the app serves: the use case, the API keys, and the tables to expire."""

    submit_job: SubmitJob
    keys: ApiKeys
    expiries: list[Expiry]


def build(settings: IngestSettings, runtime: Runtime) -> Ingest:
    """BadApiKeys or BadWebhookSecret (ValueErrors) when API_KEYS or WEBHOOK_SECRET cannot be read."""
    keys = parse_api_keys(settings.api_keys)
    webhooks = parse_webhook_secret(settings.webhook_secret) is not None
    quotas = quotas_for(PendingReader(runtime), settings.tenant_max_pending_images, settings.tenant_submit_rate,
                        keys.owners_of)
    submit_job = SubmitJob(IdempotencyKeys(runtime),
                           JobPublisher(runtime, settings.topics.jobs, settings.ingest_publish_timeout_s),
                           JobAdmissions(runtime), ZoneInfo(settings.default_timezone),
                           Limits(settings.ingest_max_images, settings.ingest_max_schedule_days, webhooks),
                           quotas=quotas)
    expiries = [statement_expiry(runtime, "ingest_idempotency_keys", EXPIRE_KEYS, settings.job_retention_s),
                statement_expiry(runtime, "admissions", EXPIRE_ADMISSIONS, settings.job_retention_s)]
    return Ingest(submit_job, keys, expiries)
