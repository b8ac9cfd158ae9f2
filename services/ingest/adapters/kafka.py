"""Publishing a submitted job: acknowledged by the broker (acks=all) within a deadline, or
NotQueued / NotAcknowledged (shared/publishing.py) saying whether it may still be written."""

from __future__ import annotations

from shared.publishing import publish_within
from shared.runtime import Runtime


class JobPublisher:
    def __init__(self, runtime: Runtime, topic: str, timeout_s: float) -> None:
        self._runtime, self._topic, self._timeout_s = runtime, topic, timeout_s

    def ready(self) -> bool:
        return bool(self._runtime.connected.is_set())

    async def publish(self, job_id: str, payload: bytes) -> None:
        await publish_within(self._runtime.producer, self._topic, payload, job_id.encode(), self._timeout_s)
