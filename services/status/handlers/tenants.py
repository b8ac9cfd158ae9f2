"""The `imagejobs_tenant_pending_images` gauge: images accepted and not yet final, per tenant,
refreshed on a timer (one grouped query each time)."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable

from prometheus_client import Gauge

from services.status.ports import PendingImages
from shared.auth import ApiKeys
from shared.metrics import tenant_label

log = logging.getLogger(__name__)
TENANT_PENDING = Gauge("imagejobs_tenant_pending_images", "Images accepted and not yet final, per tenant", ["tenant"])
TENANT_PENDING_EVERY_S = 5.0


async def export_tenant_pending(connected: Callable[[], Awaitable[object]], pending: PendingImages,
                                keys: ApiKeys) -> None:
    """Refresh the gauge for ever. Jobs recorded under a legacy key hash count for that key's
    tenant; without auth, all for one (`none`); a tenant whose jobs all finished reads 0 rather
    than its last value."""
    await connected()
    shown: set[str] = set()
    while True:
        try:
            totals: dict[str, int] = defaultdict(int)
            for owner, images in await pending():
                tenant = keys.tenant_of_owner(owner) if keys.on and owner else None
                totals[tenant_label(tenant)] += images
            for label in shown | totals.keys():
                TENANT_PENDING.labels(label).set(totals.get(label, 0))
            shown |= totals.keys()
        except Exception as exc:  # noqa: BLE001 - the next tick tries again
            log.warning("refreshing the tenant pending images gauge failed: %s", exc)
        await asyncio.sleep(TENANT_PENDING_EVERY_S)
