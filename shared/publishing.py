"""Publishing a record that a client waits for (a submitted job, a cancel or reschedule), with
a deadline, and telling apart what a missed deadline means.

`NotQueued`: the producer never took the record (no connection, no metadata): it is certainly
not written. `NotAcknowledged`: the producer took it but no acknowledgement came in time; an
idempotent producer keeps retrying it and a paused broker writes what sat in its socket buffer,
so it may still be written later. Before such a record may be answered "not accepted" it is
withdrawn (shared/admissions.py): `withdraw_unless_admitted` does that, waiting while neither the
broker nor the database can tell.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer

log = logging.getLogger(__name__)
ASK_AGAIN_S = 0.5


class NotAccepted(Exception):  # noqa: N818 - an outcome the caller answers (503)
    """The record will certainly never be acted on: not written, or withdrawn."""


class NotQueued(NotAccepted):
    """The producer did not take the record: it is certainly not written."""


class NotAcknowledged(Exception):  # noqa: N818
    """The producer took the record, but no acknowledgement came in time; `ack` resolves when
    (if ever) it does."""

    def __init__(self, ack: asyncio.Future[Any]) -> None:
        super().__init__("no acknowledgement in time")
        self.ack = ack


async def publish_within(producer: AIOKafkaProducer, topic: str, payload: bytes, key: bytes, timeout_s: float) -> None:
    """Send and wait for the acknowledgement (acks=all) for at most `timeout_s` in all."""
    started = time.monotonic()
    try:
        ack = await asyncio.wait_for(producer.send(topic, payload, key=key), timeout_s)
    except Exception as exc:  # noqa: BLE001 - TimeoutError, KafkaError: nothing was queued
        raise NotQueued(str(exc) or type(exc).__name__) from exc
    left = max(0.0, timeout_s - (time.monotonic() - started))
    try:
        await asyncio.wait_for(asyncio.shield(ack), left)
    except Exception as exc:  # noqa: BLE001 - late, or failed after being sent: its fate is unknown
        raise NotAcknowledged(ack) from exc


async def withdraw_unless_admitted(withdraw: Callable[[], Awaitable[bool]], ack: asyncio.Future[Any],
                                   what: str) -> bool:
    """True once the late record is withdrawn (it will never be acted on); False if it was
    admitted first, or acknowledged while the database could not be asked."""
    while True:
        try:
            return await withdraw()
        except Exception as exc:  # noqa: BLE001 - the database is down: ask again
            if ack.done() and not ack.cancelled() and ack.exception() is None:
                return False
            log.warning("cannot withdraw %s yet (%s); asking again", what, type(exc).__name__)
            await asyncio.sleep(ASK_AGAIN_S)
