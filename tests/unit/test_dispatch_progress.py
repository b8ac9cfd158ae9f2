"""`TasksDispatched` carries several jobs' running totals (one record per dispatch round and
partition): the status fold applies each, and a record of the older one-job form still folds."""

from __future__ import annotations

from uuid import uuid4

from services.status.domain import effects_of, jobs_touched
from shared.events import ImageSucceeded, TasksDispatched, decode_event, encode_event, envelope, utcnow


def test_every_job_of_a_grouped_record_gets_its_highest_total() -> None:
    a, b, c = uuid4(), uuid4(), uuid4()
    first = TasksDispatched(job_id=a, dispatched=3, others={b: 10, c: 1})
    later = TasksDispatched(job_id=c, dispatched=7, others={a: 2})  # a's older total changes nothing
    assert effects_of([first, later]).dispatched == {a: 3, b: 10, c: 7}


def test_the_record_survives_the_wire_and_the_one_job_form_still_decodes() -> None:
    a, b = uuid4(), uuid4()
    sent = TasksDispatched.model_construct(**envelope(TasksDispatched, utcnow()), job_id=a, dispatched=4,
                                           others={b: 9})
    assert decode_event(encode_event(sent)).totals() == {a: 4, b: 9}
    one_job = (b'{"type":"TasksDispatched","event_id":"%s","occurred_at":"2026-01-01T00:00:00Z",'
               b'"job_id":"%s","dispatched":5}' % (str(uuid4()).encode(), str(a).encode()))
    assert effects_of([decode_event(one_job)]).dispatched == {a: 5}


def test_the_fold_announces_every_job_a_dispatch_record_carries() -> None:
    """One dispatch record per round carries other jobs' totals: their cached statuses and
    progress streams must hear of the change too, not only the record's own job."""
    a, b, c, d = uuid4(), uuid4(), uuid4(), uuid4()
    events = [TasksDispatched(job_id=a, dispatched=3, others={b: 10, c: 1}), ImageSucceeded(
        job_id=d, task_id=f"{d}:0:0", visit_index=0, image_index=0, store_id="S1", image_url="http://x/1.png",
        width=2, height=3, perimeter=10)]
    assert jobs_touched(events) == {a, b, c, d}
