# ruff: noqa: E501  (PromQL reads best on one line)
"""Writes deploy/grafana/dashboards/imagejobs.json: one panel per question an operator asks.

A panel's query is one expression, or {legend: expression} for several lines on one panel.
Below the service-wide panels, a row per tenant (the `tenant` variable: every tenant the
scheduler has dispatched for; its queries select `tenant=~"$tenant"`)."""

import json
from pathlib import Path

Query = str | dict[str, str]

PANELS: list[tuple[str, Query]] = [
    ("Ingest rate (accepted/s)", 'sum(rate(imagejobs_ingest_requests_total{outcome="200"}[1m]))'),
    ("Ingest p99 latency (s)", "histogram_quantile(0.99, sum by (le) (rate(imagejobs_ingest_latency_seconds_bucket[5m])))"),
    ("Scheduler backlog (pending jobs)", "sum(imagejobs_scheduler_pending_jobs)"),
    ("Scheduling lateness p99 (s)", "histogram_quantile(0.99, sum by (le) (rate(imagejobs_scheduler_lateness_seconds_bucket[5m])))"),
    ("Processor throughput (images/s)", "sum by (outcome) (rate(imagejobs_processor_images_total[1m]))"),
    ("Errors by reason (/s)", "sum by (reason) (rate(imagejobs_processor_failures_total[5m]))"),
    # Robustness: records a consumer refused (kept whole on the DLQ topic: `imagejobs dlq list`),
    # and requests the front door refused (connections cap, header size, header or body too slow)
    ("Dead letters by service and reason (/s)", "sum by (service, reason) (rate(imagejobs_events_dlq_total[5m]))"),
    ("Front-door refusals by reason (/s)", "sum by (reason) (rate(imagejobs_http_refused_total[5m]))"),
    ("Download latency p95 (s)", "histogram_quantile(0.95, sum by (le) (rate(imagejobs_processor_download_seconds_bucket[5m])))"),
    ("Consumer lag (records)", "sum by (service, topic) (imagejobs_consumer_lag)"),
    ("Job outcomes (jobs/s)", "sum by (status) (rate(imagejobs_status_jobs_finished_total[5m]))"),
    ("Services ready", "imagejobs_ready"),
    # 1 while a consumer has lag and made no progress for STALL_S (its /readyz says why); a 0
    # line per consuming service otherwise, so a missing line means a service not scraped
    ("Stalled consumers (1 = lag, no progress)", "max by (service) (imagejobs_consumer_stalled)"),
    # The store statistics consumer (services/storestats): the ten busiest stores' images per
    # minute by outcome, and their mean perimeter in the latest one-minute window
    ("Top stores: images per minute by outcome", "topk(10, sum by (store_id, outcome) (rate(imagejobs_store_images_total[5m])) * 60)"),
    ("Top stores: mean perimeter (latest window)", "imagejobs_store_mean_perimeter and on (store_id) topk(10, sum by (store_id) (rate(imagejobs_store_images_total[5m])))"),
    # Where an image's time goes: each stage's p95, stacked, so the largest band is the bottleneck
    ("Where the time goes: p95 per stage (s)", "histogram_quantile(0.95, sum by (le, stage) (rate(imagejobs_stage_seconds_bucket[5m])))"),
]

T = 'tenant=~"$tenant"'
# The scheduler keeps only nonzero per-tenant gauges (a tenant with nothing out has no series);
# `or ... * 0` draws those as 0 for every tenant the scheduler has dispatched for.
ZERO = f"sum by (tenant) (imagejobs_tenant_dispatched_total{{{T}}}) * 0"
TENANT_PANELS: list[tuple[str, Query]] = [
    ("Images dispatched (/s)", f"sum by (tenant) (rate(imagejobs_tenant_dispatched_total{{{T}}}[1m]))"),
    # in flight: handed to the processors, no outcome yet (at most DISPATCH_WINDOW, all tenants
    # together); backlog: images of released jobs waiting in the scheduler for the tenant's share
    ("Tasks in flight and backlog (images waiting for their share)", {
        "in flight": f"sum by (tenant) (imagejobs_tenant_tasks_in_flight{{{T}}}) or {ZERO}",
        "backlog": f"sum by (tenant) (imagejobs_tenant_backlog_images{{{T}}}) or {ZERO}",
    }),
    # From an image's due time to its processing start on a processor: release, the scheduler's
    # fair share and the processor's queue together
    ("Wait from due to start (s)", {
        "p50": f"histogram_quantile(0.5, sum by (le) (rate(imagejobs_tenant_wait_seconds_bucket{{{T}}}[5m])))",
        "p95": f"histogram_quantile(0.95, sum by (le) (rate(imagejobs_tenant_wait_seconds_bucket{{{T}}}[5m])))",
    }),
    # every status instance reads the same view, so the max, not the sum
    ("Pending images (accepted, not final)", f"max by (tenant) (imagejobs_tenant_pending_images{{{T}}})"),
    ("Quota refusals (429/s) by quota", f"sum by (quota) (rate(imagejobs_ingest_rejected_total{{{T}}}[5m]))"),
]

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
TENANTS = {
    "name": "tenant", "label": "Tenant", "type": "query", "datasource": DATASOURCE,
    "query": "label_values(imagejobs_tenant_dispatched_total, tenant)",
    "definition": "label_values(imagejobs_tenant_dispatched_total, tenant)",
    "refresh": 2, "sort": 1, "multi": True, "includeAll": True,
    "current": {"text": ["All"], "value": ["$__all"]},
}


def panel(panel_id: int, title: str, query: Query, x: int, y: int) -> dict:
    queries = {"": query} if isinstance(query, str) else query
    targets = [{"refId": chr(ord("A") + i), "expr": expr, **({"legendFormat": legend} if legend else {})}
               for i, (legend, expr) in enumerate(queries.items())]
    return {"id": panel_id, "type": "timeseries", "title": title, "datasource": DATASOURCE,
            "gridPos": {"h": 8, "w": 12, "x": x, "y": y}, "targets": targets}


def dashboard() -> dict:
    panels = [panel(i + 1, title, query, 12 * (i % 2), 8 * (i // 2)) for i, (title, query) in enumerate(PANELS)]
    row_y = 8 * ((len(PANELS) + 1) // 2)
    panels.append({"id": len(panels) + 1, "type": "row", "title": "Tenant $tenant", "repeat": "tenant",
                   "collapsed": False, "panels": [], "gridPos": {"h": 1, "w": 24, "x": 0, "y": row_y}})
    for i, (title, query) in enumerate(TENANT_PANELS):
        panels.append(panel(len(panels) + 1, title, query, 12 * (i % 2), row_y + 1 + 8 * (i // 2)))
    return {"uid": "imagejobs", "title": "imagejobs", "schemaVersion": 39, "refresh": "10s",
            "time": {"from": "now-30m", "to": "now"}, "templating": {"list": [TENANTS]}, "panels": panels}


if __name__ == "__main__":
    out = Path(__file__).parent / "dashboards" / "imagejobs.json"
    out.write_text(json.dumps(dashboard(), indent=2) + "\n")
