-- Tenant quotas (issue 18): ingest refuses a submit (429) while the tenant's images accepted
-- and not yet final would exceed TENANT_MAX_PENDING_IMAGES, reading that sum from the view
-- (services/ingest/adapters/pending.py); the status service exports it per tenant. Only open
-- jobs are in this index and it carries the counters, so the per-owner sum is an index-only
-- scan however many final jobs the view holds.
CREATE INDEX IF NOT EXISTS status_jobs_tenant_pending ON status_jobs (owner)
    INCLUDE (total_images, succeeded, failed)
    WHERE status IN ('scheduled', 'ongoing') AND NOT withdrawn;
