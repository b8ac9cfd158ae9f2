"""`python -m tools.asyncapi`: write docs/asyncapi.yaml, the AsyncAPI 3 document of every
topic as YAML, generated from the event models: a unit test keeps it in step with the code, and
tests/integration/test_asyncapi.py validates it with the AsyncAPI parser (@asyncapi/parser)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from shared import events
from shared.dlq import CONTEXT

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "asyncapi.yaml"
REF = "#/components/schemas/{model}"
STATUSES = ["scheduled", "ongoing", "completed", "failed", "cancelled"]
DESCRIPTION = """Every topic of imagejobs, for downstream consumers.

Encoding: keys are UTF-8 strings (the job_id, or the task_id `job_id:visit_index:image_index`);
values are UTF-8 JSON objects with the envelope `event_id`, `type`, `schema_version`, `job_id`,
`occurred_at` (UTC ISO-8601). Topic names carry a prefix (`KAFKA_TOPIC_PREFIX`, default
`imagejobs`). Delivery is at least once: deduplicate results by `task_id` and status changes by
(`job_id`, `status`). Retention: 7 days (the broker's default here); the status topic is
compacted (the latest status per job is kept for ever).

Compatibility policy: within a `schema_version`, changes are additive only (new optional
fields, new event types); a reader must ignore fields and event types it does not know. A
breaking change bumps `schema_version`, and the services keep reading older records through
upcasters (shared/events.py), so a topic never needs rewriting.

Consumer groups `<prefix>.scheduler`, `<prefix>.processor`, `<prefix>.status` and
`<prefix>.storestats` belong to the services: a downstream consumer must use its own group id,
never one of these.

`<prefix>.store-stats` is written by the store statistics consumer (services/storestats), itself
a downstream reader of `<prefix>.results`: per store and one-minute window (event time), the
exact totals once it has caught up; the latest record per key is the window's total."""
REASONS = ("store not found; HTTP <code> from the image server; download timed out after <s>s (<n> "
           "attempts); not an image: <detail>; image too large: ...; too many redirects; address not "
           "allowed: ...; processing error: <exception type>")


def _schemas() -> dict[str, Any]:
    """Every event's JSON Schema (and the models they use) under components/schemas."""
    out: dict[str, Any] = {}
    for model in CHANNELS_OF.values():
        for event in model:
            schema = event.model_json_schema(ref_template=REF)
            out.update(schema.pop("$defs", {}))
            out[event.__name__] = schema
    out["JobStatusChanged"]["properties"]["status"]["enum"] = STATUSES
    out["ImageFailed"]["properties"]["reason"]["description"] = "Why the image failed, e.g.: " + REASONS
    out["DeadLetter"] = DEAD_LETTER
    out["DeadLetterHeaders"] = DEAD_LETTER_HEADERS
    out["StoreStats"] = STORE_STATS
    return out


CHANNELS_OF: dict[str, list[type[BaseModel]]] = {
    "jobs": [events.JobSubmitted, events.JobReleased, events.JobCancelRequested, events.JobRescheduleRequested,
             events.JobCancelled, events.JobRescheduled, events.JobCommandRefused, events.JobWithdrawn,
             events.TasksDispatched],
    "tasks": [events.ImageTask],
    "results": [events.ImageSucceeded, events.ImageFailed],
    "status": [events.JobStatusChanged],
}
KEYS = {"jobs": "job_id", "tasks": "task_id (job_id:visit_index:image_index); the scheduler picks the partition "
        "(the one with the fewest tasks out), not the key's hash", "results": "job_id",
        "status": "job_id", "dlq": "the original record's key, unchanged", "store-stats": "store_id|window_start"}
PARTITIONS = {"jobs": 6, "tasks": 12, "results": 6, "status": 6, "dlq": 1, "store-stats": 6}
COMPACTED = ("status", "store-stats")
_COUNT = {"type": "integer", "minimum": 0}
STORE_STATS = {
    "type": "object", "title": "StoreStats",
    "description": "One store's images in one tumbling window of `occurred_at` (UTC, ISO-8601 with Z).",
    "required": ["store_id", "window_start", "window_end", "images", "succeeded", "failed", "failed_by_reason",
                 "perimeter_sum", "mean_perimeter"],
    "properties": {"store_id": {"type": "string"}, "window_start": {"type": "string", "format": "date-time"},
                   "window_end": {"type": "string", "format": "date-time"}, "images": _COUNT,
                   "succeeded": _COUNT, "failed": _COUNT,
                   "failed_by_reason": {"type": "object", "additionalProperties": _COUNT,
                                        "description": "the reason up to its details: `HTTP 404`, `store not found`"},
                   "perimeter_sum": _COUNT, "mean_perimeter": {"type": ["number", "null"]}},
}
DEAD_LETTER = {
    "title": "DeadLetter",
    "description": "A record a service could not decode or handle, kept whole: the value is the original record's "
                   "value byte for byte (usually an event above, as JSON, but whatever was published), the key is "
                   "its key, and the headers are its headers followed by the context (DeadLetterHeaders). "
                   "`imagejobs dlq replay` publishes key, value and original headers again. Letters written "
                   "before this format are a JSON object {service, reason, topic, partition, offset, key, value} "
                   "(the value as text, cut at 100,000 bytes) with no context headers.",
}
_TEXT = {"type": "string"}
DEAD_LETTER_HEADERS = {
    "type": "object", "title": "DeadLetterHeaders",
    "description": "After the original record's headers, in this order (UTF-8 text; numbers in decimal; times "
                   "in epoch milliseconds), as Kafka Connect's dead letter queue does.",
    "required": [f"imagejobs.dlq.{name}" for name in CONTEXT],
    "properties": {
        "imagejobs.dlq.service": {**_TEXT, "description": "the service that refused the record"},
        "imagejobs.dlq.reason": {**_TEXT, "maxLength": 1000, "description": "why, e.g. `undecodable: ...`"},
        "imagejobs.dlq.topic": {**_TEXT, "description": "the record's topic"},
        "imagejobs.dlq.partition": {**_TEXT, "description": "its partition"},
        "imagejobs.dlq.offset": {**_TEXT, "description": "its offset"},
        "imagejobs.dlq.timestamp": {**_TEXT, "description": "its timestamp (-1: none)"},
        "imagejobs.dlq.dead_lettered_at": {**_TEXT, "description": "when it was dead-lettered"},
    },
}


def _message(name: str, key: str) -> dict[str, Any]:
    return {"name": name, "contentType": "application/json", "payload": {"$ref": REF.format(model=name)},
            "bindings": {"kafka": {"key": {"type": "string", "description": key}, "bindingVersion": "0.5.0"}}}


def document() -> dict[str, Any]:
    names = {topic: [m.__name__ for m in models] for topic, models in CHANNELS_OF.items()}
    names["dlq"] = ["DeadLetter"]
    names["store-stats"] = ["StoreStats"]
    channels = {topic: {
        "address": f"imagejobs.{topic}",
        "description": f"Key: {KEYS[topic]}. {PARTITIONS[topic]} partitions by default."
                       + (" Compacted." if topic in COMPACTED else ""),
        "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in message_names},
    } for topic, message_names in names.items()}
    operations = {"read" + topic.title().replace("-", ""): {
        "action": "receive", "channel": {"$ref": f"#/channels/{topic}"},
        "messages": [{"$ref": f"#/channels/{topic}/messages/{n}"} for n in message_names],
    } for topic, message_names in names.items()}
    messages = {n: _message(n, KEYS[t]) for t, message_names in names.items() for n in message_names}
    messages["DeadLetter"].update(contentType="application/octet-stream",
                                  headers={"$ref": REF.format(model="DeadLetterHeaders")})
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "imagejobs events", "version": "1.0.0", "description": DESCRIPTION},
        "defaultContentType": "application/json",
        "servers": {
            "local": {"host": "127.0.0.1:9092", "protocol": "kafka", "description": "`make run`"},
            "compose": {"host": "localhost:9094", "protocol": "kafka",
                        "description": "docker compose's external listener"},
        },
        "channels": channels, "operations": operations,
        "components": {"messages": messages, "schemas": _schemas()},
    }


class _Dumper(yaml.SafeDumper):
    """Block style, keys in the order written, and text of several lines as a literal block."""


def _text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_Dumper.add_representer(str, _text)
HEADER = "# Generated by `python -m tools.asyncapi` (make docs) from shared/events.py; do not edit.\n"


def render() -> str:
    return HEADER + yaml.dump(document(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


if __name__ == "__main__":
    DOC_PATH.write_text(render())
    sys.stdout.write(f"wrote {DOC_PATH}\n")
