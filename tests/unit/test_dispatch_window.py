"""The dispatch window's bookkeeping (services/scheduler/window.py): a task is out from its
dispatch until the processors' committed offset on its partition passes where it landed, or
until its lease runs out."""

from __future__ import annotations

from services.scheduler.window import TasksOut


def window(*tasks: tuple[str, str, int, int | None]) -> TasksOut:
    """(task id, tenant, partition, offset or None if not acknowledged yet), dispatched at 0."""
    out = TasksOut()
    for task_id, tenant, partition, offset in tasks:
        out.dispatched(task_id, tenant, now=0.0, partition=partition)
        if offset is not None:
            out.landed(task_id, partition, offset)
    return out


def test_a_task_is_done_once_the_committed_offset_passes_it() -> None:
    out = window(("a", "t1", 0, 10), ("b", "t1", 0, 11), ("c", "t2", 1, 5))
    assert out.processed({0: 11}) == ["a"]  # committed 11: offset 10 is done, 11 is next to do
    assert len(out) == 2 and out.by_tenant == {"t1": 1, "t2": 1}
    assert out.processed({0: 11}) == []  # the same offsets again change nothing
    assert sorted(out.processed({0: 12, 1: 6})) == ["b", "c"]
    assert len(out) == 0 and out.by_tenant == {}


def test_a_task_not_acknowledged_yet_stays_out_until_it_lands_and_is_passed() -> None:
    out = window(("a", "t1", 3, None))
    assert out.processed({3: 1_000}) == [] and len(out) == 1
    out.landed("a", 3, 40)  # acknowledged after the processors were already past it
    assert out.processed({3: 1_000}) == ["a"]


def test_offsets_of_other_partitions_or_a_group_reset_free_nothing() -> None:
    out = window(("a", "t1", 2, 50))
    assert out.processed({0: 10_000, 1: 10_000}) == []
    assert out.processed({2: 7}) == []  # the group's offset moved back (reset): the lease frees it
    assert len(out) == 1


def test_the_lease_frees_what_was_never_passed_and_forgets_where_it_landed() -> None:
    out = TasksOut()
    out.dispatched("old", "t1", now=1.0, partition=0)
    out.landed("old", 0, 5)
    out.dispatched("new", "t1", now=100.0, partition=0)
    out.landed("new", 0, 6)
    assert out.expire(dispatched_before=50.0) == ["old"]
    assert len(out) == 1
    assert out.processed({0: 7}) == ["new"]  # "old" is not returned twice


def test_a_repeated_dispatch_or_landing_counts_once() -> None:
    out = window(("a", "t1", 0, 1))
    out.dispatched("a", "t1", now=5.0, partition=0)
    out.landed("a", 0, 1)
    assert out.by_tenant["t1"] == 1
    assert out.processed({0: 2}) == ["a"] and len(out) == 0


def test_tasks_out_are_counted_by_partition_until_done_freed_or_expired() -> None:
    out = window(("a", "t1", 0, 10), ("b", "t1", 0, 11), ("c", "t2", 2, 5))
    out.dispatched("d", "t2", now=9.0, partition=3)  # handed over, not acknowledged yet
    assert out.loads(4) == [2, 0, 1, 1]
    out.processed({0: 11})
    assert out.loads(4) == [1, 0, 1, 1]
    out.free(["c"])
    assert out.expire(dispatched_before=5.0) == ["b"]
    assert out.loads(4) == [0, 0, 0, 1] and out.by_partition == {3: 1}
