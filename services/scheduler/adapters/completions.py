"""Which dispatched tasks are done, from the processors' committed offsets.

A processor commits its consumer group's offset on a tasks partition only past tasks whose
outcome is recorded and published (services/processor/handlers/tasks.py: the offset tracker),
so a task the scheduler handed to Kafka at (partition, offset) is done once the group's
committed offset on that partition is beyond it. While any task is out, this watcher asks the
group coordinator for those offsets every POLL_S (one small OffsetFetch request) and tells the
dispatcher; with nothing out it asks nothing.

It replaced reading every outcome's `task_id` header off the results topic: that consumer cost
the scheduler and the broker about a second of CPU per 10,000 images, a tenth of a burst on a
two-core machine. The price is latency: a place in the window is freed up to the processors'
commit interval (0.05 s) plus POLL_S after the outcome; that matters when the window is full
(a newcomer tenant's task waits for a place), so both are short: a few small requests a
second, and none while nothing is out. Offsets committed before this process dispatched anything concern tasks it
does not know and free nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from shared.kafka import admin_client
from shared.runtime import Runtime
from shared.settings import CommonSettings

log = logging.getLogger(__name__)
POLL_S = 0.05
RECONNECT_AFTER = 100  # failed polls in a row (5 s): the admin client is made again
PROCESSOR_SERVICE = "processor"


class CompletionWatcher:
    def __init__(self, settings: CommonSettings, runtime: Runtime, processed: Callable[[dict[int, int]], None],
                 busy: Callable[[], bool]) -> None:
        """`processed({partition: committed offset})` is told the processors' progress while
        `busy()` (tasks are out)."""
        self.settings, self.runtime, self.processed, self.busy = settings, runtime, processed, busy
        self.group = settings.consumer_group(PROCESSOR_SERVICE)
        self.topic = settings.topics.tasks
        self.watching = asyncio.Event()  # set once the coordinator can be asked

    async def run(self) -> None:
        await self.runtime.connected.wait()
        while True:
            try:
                async with admin_client(self.settings) as admin:
                    self.watching.set()
                    await self._poll(admin)
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning("cannot ask for the processors' offsets (%s); trying again", exc)
                await asyncio.sleep(1.0)

    async def _poll(self, admin: AIOKafkaAdminClient) -> None:
        coordinator: int | None = None
        failures = 0
        while failures < RECONNECT_AFTER:
            await asyncio.sleep(POLL_S)
            if not self.busy():
                continue
            try:
                if coordinator is None:
                    coordinator = await admin.find_coordinator(self.group)
                committed = await admin.list_consumer_group_offsets(self.group, coordinator)
            except (KafkaError, OSError, TimeoutError) as exc:
                coordinator, failures = None, failures + 1  # it may have moved: found again
                log.debug("asking for the processors' offsets failed (%s)", exc)
                continue
            failures = 0
            self.processed({tp.partition: meta.offset for tp, meta in committed.items()
                            if tp.topic == self.topic and meta.offset >= 0})
        raise TimeoutError(f"{RECONNECT_AFTER} polls of the processors' offsets failed in a row")
