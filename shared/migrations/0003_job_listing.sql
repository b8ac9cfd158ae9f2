-- status: when each job was submitted, for `GET /api/jobs` (newest first, keyset pagination).
ALTER TABLE status_jobs ADD COLUMN IF NOT EXISTS submitted_at timestamptz;
CREATE INDEX IF NOT EXISTS status_jobs_newest ON status_jobs (submitted_at DESC, job_id DESC) WHERE submitted;
