-- Room on each page for a row's next versions. A job's rows are updated many times while it
-- runs (the scheduler's dispatch cursor and state; the view's counters, dispatched total and
-- status), and PostgreSQL writes an update that changes no indexed column as a HOT update (no
-- new index entries) only when the new version fits on the row's own page. Packed full (the
-- default fillfactor of 100), 99.6% of scheduler_jobs' updates and 36% of status_jobs' were not
-- HOT in a 10,000-image burst; with half of each page free, 53% and 27%, and the statements
-- that move the dispatch totals took 3-6x less time (pg_stat_statements: 167 -> 22 ms for the
-- view's, 80 -> 26 ms for the scheduler's, per burst). webhook_deliveries is left packed: each
-- of its updates moves its indexed next_attempt_at, so none can be HOT. Applies to pages
-- written from now on.
ALTER TABLE scheduler_jobs SET (fillfactor = 50);
ALTER TABLE status_jobs SET (fillfactor = 50);
