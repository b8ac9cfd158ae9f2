-- imagejobs schema v1. Each service owns its tables (named by owner); one database.

-- Store master, imported from CSV by `python -m deploy.stores import FILE`.
CREATE TABLE IF NOT EXISTS stores (
    store_id   text PRIMARY KEY,
    store_name text NOT NULL,
    area_code  text NOT NULL
);

-- ingest: Idempotency-Key -> the job it created, with the event to re-publish on retry.
CREATE TABLE IF NOT EXISTS ingest_idempotency_keys (
    key        text PRIMARY KEY,
    job_id     uuid NOT NULL,
    event      jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- scheduler: the durable schedule. state: pending -> released | cancelled.
CREATE TABLE IF NOT EXISTS scheduler_jobs (
    job_id      uuid PRIMARY KEY,
    partition   int NOT NULL,
    due_at      timestamptz NOT NULL,
    event       jsonb NOT NULL,
    state       text NOT NULL DEFAULT 'pending',
    released_at timestamptz
);
CREATE INDEX IF NOT EXISTS scheduler_jobs_pending ON scheduler_jobs (partition, due_at)
    WHERE state = 'pending';

-- processor: exactly one result row per image, keyed by task_id.
CREATE TABLE IF NOT EXISTS processor_results (
    task_id      text PRIMARY KEY,
    job_id       uuid NOT NULL,
    visit_index  int NOT NULL,
    image_index  int NOT NULL,
    store_id     text NOT NULL,
    image_url    text NOT NULL,
    width        int,
    height       int,
    perimeter    int,
    error        text,
    processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS processor_results_job ON processor_results (job_id);

-- status: the job view folded from the jobs and results topics.
CREATE TABLE IF NOT EXISTS status_jobs (
    job_id         uuid PRIMARY KEY,
    submitted      boolean NOT NULL DEFAULT false,
    owner          text,
    scheduled_time timestamptz,
    total_images   int NOT NULL DEFAULT 0,
    released       boolean NOT NULL DEFAULT false,
    cancelled      boolean NOT NULL DEFAULT false,
    succeeded      int NOT NULL DEFAULT 0,
    failed         int NOT NULL DEFAULT 0,
    status         text NOT NULL DEFAULT 'scheduled',
    emitted_status text,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS status_jobs_unemitted ON status_jobs (job_id)
    WHERE emitted_status IS DISTINCT FROM status;

-- The status service's own copy of each outcome (services own their tables; the columns
-- mirror processor_results by design), laid out by role.
CREATE TABLE IF NOT EXISTS status_outcomes (
    task_id text PRIMARY KEY, job_id uuid NOT NULL,
    visit_index int NOT NULL, image_index int NOT NULL, store_id text NOT NULL, image_url text NOT NULL,
    ok boolean NOT NULL, width int, height int, perimeter int, error text
);
CREATE INDEX IF NOT EXISTS status_outcomes_job ON status_outcomes (job_id, ok);

-- Consumed offsets stored in the same transaction as the state they produced.
CREATE TABLE IF NOT EXISTS consumer_offsets (
    consumer    text NOT NULL,
    topic       text NOT NULL,
    partition   int NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (consumer, topic, partition)
);
