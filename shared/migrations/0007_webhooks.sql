-- Signed completion webhooks (issue 20). The status service owns all three.
-- A job's callback_url, stored by the fold from JobSubmitted.
ALTER TABLE status_jobs ADD COLUMN IF NOT EXISTS callback_url text;

-- The outbox: one row per job with a callback_url, inserted by the fold in the same
-- transaction as the job's final status (so created exactly once, and never lost), then
-- claimed and sent by the delivery loop of any status instance. next_attempt_at is when the
-- next attempt is due, or, while an instance holds the row, when its lease runs out.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    job_id          uuid PRIMARY KEY,
    webhook_id      text NOT NULL,
    url             text NOT NULL,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_status     int,
    last_error      text
);
-- Only what is still to be sent: the claim reads this and nothing else.
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';

-- Every attempt, for the job's owner (GET /api/jobs/{id}/webhook).
CREATE TABLE IF NOT EXISTS webhook_attempts (
    job_id      uuid NOT NULL,
    attempt     int NOT NULL,
    at          timestamptz NOT NULL,
    status_code int,
    error       text,
    duration_ms int NOT NULL,
    PRIMARY KEY (job_id, attempt)
);
