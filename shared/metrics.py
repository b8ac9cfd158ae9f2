"""Prometheus metrics shared by every service (each service adds its own beside these)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SERVICE_READY = Gauge("imagejobs_ready", "1 when the service's Kafka and database are up", ["service"])
EVENTS_CONSUMED = Counter("imagejobs_events_consumed_total", "Events consumed", ["service", "type"])
EVENTS_DLQ = Counter("imagejobs_events_dlq_total", "Records sent to the DLQ", ["service", "reason"])
CONSUMER_LAG = Gauge("imagejobs_consumer_lag", "Records behind the end of the topic", ["service", "topic"])
CONSUMER_STALLED = Gauge("imagejobs_consumer_stalled",
                         "1 while the service's consumer has lag and made no progress for STALL_S", ["service"])
CONSUMERS_REPLACED = Counter("imagejobs_consumers_replaced_total",
                             "Kafka consumers replaced after waiting CONSUMER_REJOIN_DEADLINE_S for an assignment",
                             ["service"])
DB_RETRIES = Counter("imagejobs_db_retries_total", "Database operations retried", ["service"])
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def latency_histogram(name: str, doc: str, labels: list[str] | None = None) -> Histogram:
    return Histogram(name, doc, labels or [], buckets=LATENCY_BUCKETS)

# Where an image's time goes, stage by stage: due -> released (scheduler) -> task started
# (processor: waiting in the tasks topic and for a slot) -> downloaded (store check, download,
# measurement) -> recorded (GPU time, result row, outcome event acknowledged) -> folded (status
# view committed). Each stage is measured from the previous milestone; milestones in another
# process come from the Kafka record's timestamp (CreateTime, set by the producing service).
STAGES = ("released", "started", "downloaded", "recorded", "folded")
STAGE_SECONDS = Histogram("imagejobs_stage_seconds", "Time an image spent in each stage of its path", ["stage"],
                          buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
STAGE = {name: STAGE_SECONDS.labels(name) for name in STAGES}


class BoundedLabel:
    """A label value from an open set, bounded: the first `limit` distinct values keep their
    name, later ones share `other`, so no input can create unbounded series."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return "other"
        self._seen.add(value)
        return value


_TENANTS = BoundedLabel(64)


def tenant_label(tenant: str | None) -> str:
    """The `tenant` label of per-tenant metrics: tenants are configured (API_KEYS), so a few;
    `none` without auth; past 64 distinct values, `other`."""
    return _TENANTS(tenant) if tenant else "none"
