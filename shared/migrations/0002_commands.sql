-- Cancel and reschedule are commands decided by the job's release owner (the scheduler
-- instance owning the job's partition; services/scheduler/adapters/commands.py).

-- scheduler: each command's decision, recorded with its effect in one transaction, so a
-- command redelivered after a crash gets the same answer again.
CREATE TABLE IF NOT EXISTS scheduler_commands (
    command_id     uuid PRIMARY KEY,
    job_id         uuid NOT NULL,
    command        text NOT NULL,
    accepted       boolean NOT NULL,
    state          text NOT NULL,
    scheduled_time timestamptz,
    decided_at     timestamptz NOT NULL DEFAULT now()
);

-- status: decisions folded from the jobs topic, in the same transaction as the view they
-- change, so the API answers a command only once a read would reflect it.
CREATE TABLE IF NOT EXISTS status_commands (
    command_id uuid PRIMARY KEY,
    job_id     uuid NOT NULL,
    accepted   boolean NOT NULL,
    state      text NOT NULL,
    decided_at timestamptz NOT NULL DEFAULT now()
);
