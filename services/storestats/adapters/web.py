"""`/healthz`, `/readyz` and `/metrics` on faust's web server, like every other service.

The per-store series are the counters in PostgreSQL (read at start and after each batch, and
exported by a collector), so after a restart they continue instead of starting from zero.
Cardinality: one `imagejobs_store_images_total` series per store and
outcome (failures by reason category) and one `imagejobs_store_mean_perimeter` per store: about
10,000 series for the 4,944 stores of the store master.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.storestats.app import StatsApp
from shared.metrics import CONSUMER_LAG, SERVICE_READY

SERVICE = "storestats"


class TotalsCollector(Collector):
    def __init__(self, stats: StatsApp) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        images = CounterMetricFamily("imagejobs_store_images", "Images per store since the start of the topic "
                                     "(each task once), by outcome and failure reason",
                                     labels=["store_id", "outcome", "reason"])
        mean = GaugeMetricFamily("imagejobs_store_mean_perimeter", "Mean perimeter of the store's succeeded "
                                 "images in its latest window with one", labels=["store_id"])
        for store_id, totals in list(self.stats.totals.items()):
            images.add_metric([store_id, "succeeded", ""], totals.succeeded)
            for reason, n in totals.failed.items():
                images.add_metric([store_id, "failed", reason], n)
            if totals.latest_mean is not None:
                mean.add_metric([store_id], totals.latest_mean)
        yield images
        yield mean


def readiness(stats: StatsApp) -> dict[str, bool]:
    app = stats.app
    assigned = stats.settings.topics.results in {tp.topic for tp in app.consumer.assignment()}
    return {"kafka": assigned, "database": stats.loaded.is_set(), "settled": not app.rebalancing}


def lag(stats: StatsApp) -> dict[str, int]:
    """Records behind the end of each consumed topic (last stable offset minus committed)."""
    consumer, out = stats.app.consumer, {}
    for tp in consumer.assignment():
        if tp.topic == stats.settings.topics.results:
            committed = consumer._committed_offset.get(tp) or 0  # noqa: SLF001 - faust keeps no public one
            out[tp.topic] = out.get(tp.topic, 0) + max(0, (consumer.highwater(tp) or 0) - committed)
    return out


def add_pages(stats: StatsApp) -> None:
    app = stats.app
    REGISTRY.register(TotalsCollector(stats))

    @app.page("/healthz")
    async def healthz(web: View, request: Request) -> Response:
        return web.json({"status": "ok", "service": SERVICE})

    @app.page("/readyz")
    async def readyz(web: View, request: Request) -> Response:
        checks = readiness(stats)
        ready = all(checks.values())
        SERVICE_READY.labels(SERVICE).set(1 if ready else 0)
        body: dict[str, Any] = {"ready": ready, "checks": checks}
        if not ready:
            body["error"] = "not ready: " + ", ".join(k for k, ok in checks.items() if not ok)
        else:
            body["lag"] = _update_lag(stats)
        return web.json(body, status=200 if ready else 503)

    @app.page("/metrics")
    async def metrics(web: View, request: Request) -> Response:
        if all(readiness(stats).values()):
            _update_lag(stats)
        # aiohttp sets the charset itself and refuses one in content_type
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split("; charset")[0])


def _update_lag(stats: StatsApp) -> dict[str, int]:
    behind = lag(stats)
    for topic, n in behind.items():
        CONSUMER_LAG.labels(SERVICE, topic).set(n)
    return behind
