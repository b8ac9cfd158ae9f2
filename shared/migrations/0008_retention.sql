-- Retention (issue 22): each service forgets its own rows of finished jobs after
-- JOB_RETENTION_S (shared/retention.py; docs/guarantees.md, "What expires, and when"). Every
-- expiry reads an index that holds only what can expire, so a maintenance round on a table of
-- months finds its rows (or that there are none) without scanning the table. (Building these
-- indexes on a large existing table blocks its writes while they build: deploy in a quiet hour.)

-- status: when the job's status became final (completed, failed or cancelled), the clock of
-- retention; set by the fold (view.refresh_status). Rows already final count from their last
-- change.
ALTER TABLE status_jobs ADD COLUMN IF NOT EXISTS final_at timestamptz;
UPDATE status_jobs SET final_at = updated_at WHERE status IN ('completed', 'failed', 'cancelled') AND final_at IS NULL;
CREATE INDEX IF NOT EXISTS status_jobs_final ON status_jobs (final_at) WHERE final_at IS NOT NULL;
-- a job's decisions go with it
CREATE INDEX IF NOT EXISTS status_commands_job ON status_commands (job_id);

-- scheduler: when the row stopped being pending or dispatching (released or cancelled).
ALTER TABLE scheduler_jobs ADD COLUMN IF NOT EXISTS finished_at timestamptz;
UPDATE scheduler_jobs SET finished_at = COALESCE(released_at, now())
    WHERE state IN ('released', 'cancelled') AND finished_at IS NULL;
CREATE INDEX IF NOT EXISTS scheduler_jobs_finished ON scheduler_jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS scheduler_commands_job ON scheduler_commands (job_id);

-- processor, ingest: by the time each row was written. BRIN, not B-tree: these rows are written
-- in time order, so a summary per block range finds the old ones, and a write costs next to
-- nothing (a B-tree on processor_results.processed_at cost ~10% of a burst's throughput:
-- 1,663 against 1,832 images/s, three alternated pairs on one stack).
CREATE INDEX IF NOT EXISTS processor_results_processed ON processor_results USING brin (processed_at);
CREATE INDEX IF NOT EXISTS ingest_idempotency_keys_created ON ingest_idempotency_keys USING brin (created_at);
CREATE INDEX IF NOT EXISTS admissions_decided ON admissions USING brin (decided_at);
