"""Publishing a submitted job: acknowledged by the broker (acks=all) within a deadline, or an
error (the job is then not accepted)."""

from __future__ import annotations

import asyncio
from typing import Any


class JobPublisher:
    def __init__(self, runtime: Any, topic: str, timeout_s: float) -> None:
        self._runtime, self._topic, self._timeout_s = runtime, topic, timeout_s

    def ready(self) -> bool:
        return bool(self._runtime.connected.is_set())

    async def publish(self, job_id: str, payload: bytes) -> None:
        await asyncio.wait_for(self._runtime.producer.send_and_wait(self._topic, payload, key=job_id.encode()),
                               self._timeout_s)
