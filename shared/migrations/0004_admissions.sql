-- A record whose publisher was not acknowledged in time (ingest's JobSubmitted, the status
-- API's cancel or reschedule) may still reach Kafka later. Whoever writes its id here first
-- decides its fate: the publisher, withdrawing it (admitted = false: its 503 is then true and
-- the record is ignored when it arrives), or the consumer that acts on it (the scheduler,
-- admitting it: the publisher then answers 200 after all). shared/admissions.py.
CREATE TABLE IF NOT EXISTS admissions (
    id         uuid PRIMARY KEY,
    admitted   boolean NOT NULL,
    decided_at timestamptz NOT NULL DEFAULT now()
);

-- status: a job withdrawn by ingest (never accepted, never runs) is hidden from reads.
ALTER TABLE status_jobs ADD COLUMN IF NOT EXISTS withdrawn boolean NOT NULL DEFAULT false;
