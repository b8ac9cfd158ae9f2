"""`/healthz`, `/readyz` and `/metrics` on faust's web server, like every other service.

The per-store series are the counters in PostgreSQL (read at start and after each batch, and
exported by a collector), so after a restart they continue instead of starting from zero.
Cardinality: one `imagejobs_store_images_total` series per store and
outcome (failures by reason category) and one `imagejobs_store_mean_perimeter` per store: about
10,000 series for the 4,944 stores of the store master. Store ids outside the store master share
one label value, `unknown`, and reasons outside the documented set share `other`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from faust.exceptions import ConsumerNotStarted
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.storestats.app import StatsApp
from services.storestats.domain import UNKNOWN_STORE, StoreTotals, is_unknown_store, reason_label
from shared.metrics import CONSUMER_LAG, CONSUMER_STALLED, SERVICE_READY

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
        counts, means = labelled_totals(self.stats.totals)
        for (store, outcome, reason), n in sorted(counts.items()):
            images.add_metric([store, outcome, reason], n)
        for store, value in sorted(means.items()):
            mean.add_metric([store], value)
        yield images
        yield mean


def labelled_totals(totals: dict[str, StoreTotals]) -> tuple[dict[tuple[str, str, str], int], dict[str, float]]:
    """The series to export, with bounded labels: every store that is not in the store master
    (its only outcomes are `store not found`) counts under one `store_id="unknown"`, and a
    reason outside the documented set under `reason="other"`, so a client inventing store ids
    or an odd producer cannot create a million series."""
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    means: dict[str, float] = {}
    for store_id, store in list(totals.items()):
        label = UNKNOWN_STORE if is_unknown_store(store) else store_id
        if store.succeeded or label != UNKNOWN_STORE:
            counts[(label, "succeeded", "")] += store.succeeded
        for reason, n in store.failed.items():
            counts[(label, "failed", reason_label(reason))] += n
        if store.latest_mean is not None and label != UNKNOWN_STORE:
            means[label] = store.latest_mean
    return counts, means


def readiness(stats: StatsApp) -> tuple[dict[str, bool], dict[str, str]]:
    """The checks, and why the failing ones fail (`progress`: lag, and no batch written for
    STALL_S)."""
    app = stats.app
    try:
        assigned = stats.settings.topics.results in {tp.topic for tp in app.consumer.assignment()}
    except ConsumerNotStarted:  # asked in the moment between the web server's start and the consumer's
        return {"kafka": False}, {"kafka": "the consumer is starting"}
    checks = {"kafka": assigned, "database": stats.loaded.is_set(), "settled": not app.rebalancing}
    reasons: dict[str, str] = {}
    stalled = stats.stall.stalled_for()
    behind = sum(lag(stats).values()) if stalled and assigned else 0
    CONSUMER_STALLED.labels(SERVICE).set(1 if behind else 0)
    checks["progress"] = not behind
    if behind:
        reasons["progress"] = (f"stalled: {behind} records behind and no progress for {stalled:.0f}s"
                               + (f"; last error: {stats.stall.last_error}" if stats.stall.last_error else ""))
    return checks, reasons


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
        checks, reasons = readiness(stats)
        ready = all(checks.values())
        SERVICE_READY.labels(SERVICE).set(1 if ready else 0)
        body: dict[str, Any] = {"ready": ready, "checks": checks}
        if not ready:
            failing = [f"{k} ({reasons[k]})" if k in reasons else k for k, ok in checks.items() if not ok]
            body["error"] = "not ready: " + ", ".join(failing)
            body["reasons"] = reasons
        else:
            body["lag"] = _update_lag(stats)
        return web.json(body, status=200 if ready else 503)

    @app.page("/metrics")
    async def metrics(web: View, request: Request) -> Response:
        if all(readiness(stats)[0].values()):
            _update_lag(stats)
        # aiohttp sets the charset itself and refuses one in content_type
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split("; charset")[0])


def _update_lag(stats: StatsApp) -> dict[str, int]:
    behind = lag(stats)
    for topic, n in behind.items():
        CONSUMER_LAG.labels(SERVICE, topic).set(n)
    return behind
