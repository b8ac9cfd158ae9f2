"""Encoding and decoding events (shared/events.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import UUID

import pytest

from shared.events import (
    ImageFailed,
    ImageSucceeded,
    ImageTask,
    JobCancelled,
    JobReleased,
    JobStatusChanged,
    JobSubmitted,
    Visit,
    decode_event,
    encode_event,
    envelope,
    task_id_for,
)

JOB = UUID("0b7e3f7e-3c1a-4d8e-9a57-5a3b2f6c1d00")
WHEN = datetime(2025, 2, 16, 5, 27, tzinfo=UTC)
OUTCOME = {"job_id": JOB, "task_id": task_id_for(JOB, 1, 2), "visit_index": 1, "image_index": 2,
           "store_id": "S00339218", "image_url": "https://img.example/a.jpg"}

EVENTS = [
    JobSubmitted(job_id=JOB, scheduled_time=WHEN, owner="abc123",
                 visits=(Visit(store_id="S1", image_urls=("https://x/1", "https://x/2"), visit_time="10:30"),
                         Visit(store_id="S2", image_urls=("https://x/3",)))),
    JobReleased(job_id=JOB, scheduled_time=WHEN, total_images=3),
    JobCancelled(job_id=JOB),
    ImageTask(job_id=JOB, task_id=task_id_for(JOB, 0, 1), visit_index=0, image_index=1, store_id="S1",
              image_url="https://x/2", scheduled_time=WHEN),
    ImageSucceeded(**OUTCOME, width=640, height=480, perimeter=2240),  # type: ignore[arg-type]
    ImageFailed(**OUTCOME, reason="HTTP 404"),  # type: ignore[arg-type]
    JobStatusChanged(job_id=JOB, status="ongoing", total=3, succeeded=1, failed=0),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type)
def test_round_trip(event: object) -> None:
    decoded = decode_event(encode_event(event))  # type: ignore[arg-type]
    assert type(decoded) is type(event)
    assert decoded == event


def test_every_event_type_is_covered() -> None:
    assert {e.type for e in EVENTS} == {"JobSubmitted", "JobReleased", "JobCancelled", "ImageTask",
                                         "ImageSucceeded", "ImageFailed", "JobStatusChanged"}


def test_envelope_is_on_the_wire() -> None:
    wire = json.loads(encode_event(EVENTS[1]))
    assert wire["type"] == "JobReleased"
    assert wire["job_id"] == str(JOB)
    assert wire["schema_version"] == 1
    assert {"event_id", "occurred_at"} <= wire.keys()


def test_an_event_built_without_validation_carries_a_full_envelope() -> None:
    """`model_construct(**envelope(...))` (the hot paths) gives what validation would: a fresh
    id, the model's schema version, an aware time, and it decodes back equal."""
    built = [ImageSucceeded.model_construct(**envelope(ImageSucceeded), **OUTCOME, width=3, height=4, perimeter=14)
             for _ in range(2)]
    assert built[0].event_id != built[1].event_id
    assert built[0].schema_version == ImageSucceeded.model_fields["schema_version"].default
    assert built[0].occurred_at.tzinfo is not None
    assert decode_event(encode_event(built[0])) == built[0]


def test_task_id_format() -> None:
    assert task_id_for(JOB, 3, 14) == f"{JOB}:3:14"


def test_submitted_total_images() -> None:
    assert EVENTS[0].total_images == 3  # type: ignore[union-attr]


@pytest.mark.parametrize("raw", [b"", b"not json", b"\xff\xfe\x00", b"{", b"[1, 2]", b'"JobCancelled"', b"null"])
def test_non_json_or_non_object_bytes_raise_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_event(raw)


def test_unknown_type_raises_value_error() -> None:
    raw = json.dumps({"type": "JobExploded", "job_id": str(JOB)}).encode()
    with pytest.raises(ValueError):
        decode_event(raw)


def test_missing_type_raises_value_error() -> None:
    with pytest.raises(ValueError):
        decode_event(json.dumps({"job_id": str(JOB)}).encode())


@pytest.mark.parametrize("field", ["job_id", "scheduled_time", "total_images"])
def test_missing_required_field_raises_value_error(field: str) -> None:
    wire = json.loads(encode_event(EVENTS[1]))
    del wire[field]
    with pytest.raises(ValueError):
        decode_event(json.dumps(wire).encode())


def test_naive_datetime_is_refused() -> None:
    wire = json.loads(encode_event(EVENTS[1]))
    wire["scheduled_time"] = "2025-02-16T05:27:00"
    with pytest.raises(ValueError):
        decode_event(json.dumps(wire).encode())


@pytest.mark.parametrize("wire", [
    {"type": ["JobCancelled"], "job_id": str(JOB)},
    {"type": {"name": "JobCancelled"}, "job_id": str(JOB)},
    {"type": "JobCancelled", "schema_version": [1], "job_id": str(JOB)},
])
def test_unhashable_type_or_version_raises_value_error(wire: dict[str, object]) -> None:
    # Consumers catch ValueError to dead-letter undecodable records; anything else escapes them.
    with pytest.raises(ValueError):
        decode_event(json.dumps(wire).encode())
