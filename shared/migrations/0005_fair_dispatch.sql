-- Fair dispatch (issue 18): a released job's tasks are handed to the processors as they take
-- work, shared fairly between tenants (weights) and, within a tenant, between its jobs,
-- higher priority first (services/scheduler/handlers/dispatch.py).

-- scheduler: `dispatched` counts a job's tasks handed to the processors (in tasks_for order), so
-- a restart goes on from there. A released job whose tasks are not all dispatched yet is in
-- state `dispatching`, then `released`. (The index names only the state: a cursor update then
-- changes no indexed column and stays a HOT update; with `dispatched` in the index's predicate
-- every cursor update was a full one.) Rows written before this migration were dispatched whole.
ALTER TABLE scheduler_jobs ADD COLUMN IF NOT EXISTS dispatched int NOT NULL DEFAULT 0;
ALTER TABLE scheduler_jobs ADD COLUMN IF NOT EXISTS total_images int;
ALTER TABLE scheduler_jobs ADD COLUMN IF NOT EXISTS tenant text;
ALTER TABLE scheduler_jobs ADD COLUMN IF NOT EXISTS priority smallint NOT NULL DEFAULT 3;
CREATE INDEX IF NOT EXISTS scheduler_jobs_dispatching ON scheduler_jobs (partition) WHERE state = 'dispatching';

-- status: the job's priority and how many of its images have been handed to the processors.
ALTER TABLE status_jobs ADD COLUMN IF NOT EXISTS priority smallint NOT NULL DEFAULT 3;
ALTER TABLE status_jobs ADD COLUMN IF NOT EXISTS dispatched int NOT NULL DEFAULT 0;
