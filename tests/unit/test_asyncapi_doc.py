"""docs/asyncapi.yaml is generated from the event models and lists every event type."""

from __future__ import annotations

import typing

import yaml

from shared.events import AnyEvent
from tools.asyncapi import DOC_PATH, document, render


def test_the_published_asyncapi_document_matches_the_code() -> None:
    assert DOC_PATH.read_text() == render(), "run `python -m tools.asyncapi` and commit the result"


def test_every_event_type_is_on_a_channel_with_its_schema() -> None:
    doc = document()
    union = typing.get_args(typing.get_args(AnyEvent)[0])
    on_channels = {name for channel in doc["channels"].values() for name in channel["messages"]}
    assert {event.__name__ for event in union} <= on_channels
    assert "DeadLetter" in doc["channels"]["dlq"]["messages"]
    for name in on_channels:
        payload = doc["components"]["messages"][name]["payload"]["$ref"].rsplit("/", 1)[1]
        assert payload in doc["components"]["schemas"]
    statuses = doc["components"]["schemas"]["JobStatusChanged"]["properties"]["status"]["enum"]
    assert statuses == ["scheduled", "ongoing", "completed", "failed", "cancelled"]
    published = DOC_PATH.read_text()
    assert not published.split("\n", 2)[1].startswith("{")  # YAML, not JSON
    assert yaml.safe_load(published) == doc
