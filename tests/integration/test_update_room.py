"""shared/migrations/0009_update_room.sql: the rows a running job updates again and again (the
view's counters, the scheduler's dispatch cursor) are updated in place on their page (HOT:
no new index entries), because each page keeps room for their next versions. Rows are written
as a burst writes them, many at once; then each is moved once, as a fold or a dispatch round
moves them."""

from __future__ import annotations

import psycopg

from tests.support.fold import ScratchView

ROWS = 400


def hot_share(url: str, table: str, insert: str, update: str) -> float:
    """Of `update`'s row updates, the share PostgreSQL wrote as HOT (counted in the transaction)."""
    with psycopg.connect(url) as conn:
        conn.execute(insert, (ROWS,))
        conn.commit()
        updated = conn.execute(update).rowcount
        hot = conn.execute("SELECT pg_stat_get_xact_tuples_hot_updated(%s::regclass)", (table,)).fetchone()
        conn.rollback()
    assert updated == ROWS
    return hot[0] / updated if hot else 0.0


def test_a_burst_of_view_rows_moves_its_counters_in_place(scratch: ScratchView) -> None:
    share = hot_share(scratch.url, "status_jobs",
                      "INSERT INTO status_jobs (job_id, submitted, owner, total_images, released, status)"
                      " SELECT gen_random_uuid(), true, 'team-a', 10, true, 'ongoing' FROM generate_series(1, %s)",
                      "UPDATE status_jobs SET succeeded = succeeded + 1, dispatched = 10 WHERE owner = 'team-a'")
    assert share >= 0.9, share  # packed full (fillfactor 100) this is ~0


def test_a_burst_of_scheduler_rows_moves_its_dispatch_cursor_in_place(scratch: ScratchView) -> None:
    share = hot_share(scratch.url, "scheduler_jobs",
                      "INSERT INTO scheduler_jobs (job_id, partition, due_at, event, state, total_images)"
                      " SELECT gen_random_uuid(), 0, now(), '{}'::jsonb, 'dispatching', 10 FROM generate_series(1, %s)",
                      "UPDATE scheduler_jobs SET dispatched = dispatched + 5 WHERE state = 'dispatching'")
    assert share >= 0.9, share
