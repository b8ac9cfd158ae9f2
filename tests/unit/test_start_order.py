"""The order a processor starts its fetched tasks in (services/processor/domain.StartQueue):
fair between tenants, the most urgent first within a tenant, otherwise the order fetched, so
the committed offset (and with it the scheduler's dispatch window) follows the work done."""

from __future__ import annotations

from services.processor.domain import StartQueue


def drain(queue: StartQueue[str]) -> list[str]:
    out: list[str] = []
    while (item := queue.pop()) is not None:
        out.append(item)
    return out


def test_a_tenants_tasks_start_in_the_order_fetched_not_by_job_in_turn() -> None:
    queue: StartQueue[str] = StartQueue()
    for item in ("a1", "a2", "a3", "b1", "a4", "b2"):  # two jobs of one tenant, as fetched
        queue.put("team", 3, item)
    assert len(queue) == 6
    assert drain(queue) == ["a1", "a2", "a3", "b1", "a4", "b2"]
    assert len(queue) == 0


def test_another_tenants_task_is_not_queued_behind_the_backlog() -> None:
    queue: StartQueue[str] = StartQueue()
    for i in range(100):
        queue.put("big", 3, f"big{i}")
    queue.put("small", 3, "small0")
    assert drain(queue)[:2] in (["big0", "small0"], ["small0", "big0"])


def test_weights_share_the_starts_between_busy_tenants() -> None:
    queue: StartQueue[str] = StartQueue({"heavy": 3})
    for i in range(40):
        queue.put("heavy", 3, f"h{i}")
        queue.put("light", 3, f"l{i}")
    first = drain(queue)[:20]
    heavy = [item for item in first if item.startswith("h")]
    light = [item for item in first if item.startswith("l")]
    assert len(heavy) in (14, 15, 16)  # three starts to one, each within a start of its share
    assert heavy == [f"h{i}" for i in range(len(heavy))] and light == [f"l{i}" for i in range(len(light))]


def test_the_most_urgent_of_a_tenant_goes_first() -> None:
    queue: StartQueue[str] = StartQueue()
    for item in ("p3-1", "p3-2"):
        queue.put("team", 3, item)
    queue.put("team", 1, "p1-1")
    queue.put("team", 5, "p5-1")
    queue.put("team", 1, "p1-2")
    assert drain(queue) == ["p1-1", "p1-2", "p3-1", "p3-2", "p5-1"]


def test_dropping_a_revoked_partitions_tasks_keeps_the_rest_in_order() -> None:
    queue: StartQueue[str] = StartQueue()
    for item in ("p0:1", "p1:1", "p0:2", "p1:2", "p0:3"):
        queue.put("team", 3, item)
    queue.put("other", 2, "p1:3")
    queue.put("gone", 3, "p1:4")
    assert queue.pop() == "p0:1"
    assert queue.drop(lambda item: item.startswith("p1:")) == 4
    assert len(queue) == 2
    assert drain(queue) == ["p0:2", "p0:3"]
    queue.put("gone", 3, "p0:4")  # a tenant whose tasks were all dropped queues again
    assert queue.drop(lambda item: item.startswith("p1:")) == 0
    assert drain(queue) == ["p0:4"]
