"""A small Server-Sent Events reader for the tests (the wire format, parsed by hand on
purpose: the tests check what any client would receive)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Event:
    id: str | None = None
    event: str | None = None
    data: list[str] = field(default_factory=list)
    retry: int | None = None

    @property
    def status(self) -> dict[str, Any]:
        return dict(json.loads("\n".join(self.data)))


@dataclass
class Stream:
    """What one connection delivered: its events and how many heartbeat comments."""

    response: httpx.Response
    events: list[Event] = field(default_factory=list)
    heartbeats: int = 0

    def __iter__(self) -> Iterator[Event]:
        current = Event()
        for line in self.response.iter_lines():
            if line == "":
                if current.data or current.id is not None:
                    self.events.append(current)
                    yield current
                current = Event()
            elif line.startswith(":"):
                self.heartbeats += 1
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    current.data.append(value)
                elif name == "id":
                    current.id = value
                elif name == "event":
                    current.event = value
                elif name == "retry":
                    current.retry = int(value)
