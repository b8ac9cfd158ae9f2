"""Counting a batch of results records (services/storestats/handlers.py) with in-memory fakes
of the store, the statistics topic and the DLQ: windows published with their totals, repeats
counted once, poison dead-lettered, and an image the store refuses isolated from its batch."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from uuid import uuid4

from services.storestats.domain import StoreTotals
from services.storestats.handlers import StoreCounter
from shared.events import ImageFailed, ImageSucceeded, JobReleased, encode_event
from tests.handlers.fakes_storestats import DeadLetters, Record, Store, Topic

COMMON = {"visit_index": 0, "image_index": 0, "image_url": "http://img/a.png"}


def ok(task: str, store: str = "S1", perimeter: int = 100) -> Record:
    return Record(encode_event(ImageSucceeded(job_id=uuid4(), task_id=task, store_id=store, width=perimeter // 2,
                                              height=0, perimeter=perimeter, **COMMON)))


def bad(task: str, reason: str, store: str = "S1") -> Record:
    return Record(encode_event(ImageFailed(job_id=uuid4(), task_id=task, store_id=store, reason=reason, **COMMON)))


def not_an_outcome() -> Record:
    return Record(encode_event(JobReleased(job_id=uuid4(), scheduled_time=datetime.now(UTC), total_images=1)))


def counter(store: Store) -> tuple[StoreCounter[Record], Topic, DeadLetters, dict[str, StoreTotals]]:
    topic, dead, totals = Topic(), DeadLetters(), {}
    return StoreCounter(store, topic, dead, totals, 60), topic, dead, totals


def published(topic: Topic) -> dict[bytes, dict[str, object]]:
    """The latest value per key, as the compacted topic keeps it."""
    return {key: json.loads(value) for key, value in topic.records}


def test_a_batch_is_counted_its_windows_published_and_the_totals_refreshed() -> None:
    store = Store()
    write, topic, dead, totals = counter(store)
    released = not_an_outcome()
    asyncio.run(write.write_batch([ok("a"), ok("b", perimeter=50), bad("c", "HTTP 404 from x"), ok("d", "S2"),
                                   released]))
    windows = {value["store_id"]: value for value in published(topic).values()}
    assert set(windows) == {"S1", "S2"} and len(topic.records) == 2
    s1 = windows["S1"]
    assert (s1["images"], s1["succeeded"], s1["failed"], s1["perimeter_sum"]) == (3, 2, 1, 150)
    assert s1["failed_by_reason"] == {"HTTP 404": 1} and s1["mean_perimeter"] == 75
    assert totals["S1"] == StoreTotals(2, {"HTTP 404": 1}) and totals["S2"].succeeded == 1
    assert dead.records == []


def test_a_repeated_outcome_changes_nothing() -> None:
    store = Store()
    write, topic, _, totals = counter(store)
    asyncio.run(write.write_batch([ok("a"), ok("b")]))
    first = published(topic)
    asyncio.run(write.write_batch([ok("a"), ok("a")]))
    assert published(topic) == first and totals["S1"].succeeded == 2


def test_poison_is_dead_lettered_and_the_rest_counted() -> None:
    write, topic, dead, totals = counter(Store())
    poison = Record(b"\xff not json")
    asyncio.run(write.write_batch([ok("a"), poison, ok("b")]))
    assert [(record, reason.split(":")[0]) for record, reason in dead.records] == [(poison, "undecodable")]
    assert totals["S1"].succeeded == 2 and len(topic.records) == 1


def test_an_image_the_store_refuses_is_isolated_and_dead_lettered_alone() -> None:
    write, topic, dead, totals = counter(Store(refuses=frozenset({"c"})))
    refused = ok("c")
    asyncio.run(write.write_batch([ok("a"), ok("b"), refused, ok("d"), ok("e")]))
    assert [record for record, _ in dead.records] == [refused]
    assert dead.records[0][1].startswith("refused: ")
    assert totals["S1"].succeeded == 4
    assert [value["succeeded"] for value in published(topic).values()] == [4]


def test_a_batch_of_nothing_to_count_publishes_nothing() -> None:
    write, topic, dead, totals = counter(Store())
    asyncio.run(write.write_batch([not_an_outcome()]))
    assert topic.records == [] and dead.records == [] and totals == {}
