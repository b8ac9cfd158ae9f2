# ruff: noqa: E501  (PromQL reads best on one line)
"""Writes deploy/grafana/dashboards/imagejobs.json: one panel per question an operator asks."""

import json
from pathlib import Path

PANELS = [
    ("Ingest rate (accepted/s)", 'sum(rate(imagejobs_ingest_requests_total{outcome="200"}[1m]))'),
    ("Ingest p99 latency (s)", "histogram_quantile(0.99, sum by (le) (rate(imagejobs_ingest_latency_seconds_bucket[5m])))"),
    ("Scheduler backlog (pending jobs)", "sum(imagejobs_scheduler_pending_jobs)"),
    ("Scheduling lateness p99 (s)", "histogram_quantile(0.99, sum by (le) (rate(imagejobs_scheduler_lateness_seconds_bucket[5m])))"),
    ("Processor throughput (images/s)", "sum by (outcome) (rate(imagejobs_processor_images_total[1m]))"),
    ("Errors by reason (/s)", "sum by (reason) (rate(imagejobs_processor_failures_total[5m]))"),
    ("Download latency p95 (s)", "histogram_quantile(0.95, sum by (le) (rate(imagejobs_processor_download_seconds_bucket[5m])))"),
    ("Consumer lag (records)", "sum by (service, topic) (imagejobs_consumer_lag)"),
    ("Job outcomes (jobs/s)", "sum by (status) (rate(imagejobs_status_jobs_finished_total[5m]))"),
    ("Services ready", "imagejobs_ready"),
    # Where an image's time goes: each stage's p95, stacked, so the largest band is the bottleneck
    # The store statistics consumer (services/storestats): the ten busiest stores' images per
    # minute by outcome, and their mean perimeter in the latest one-minute window
    ("Top stores: images per minute by outcome", "topk(10, sum by (store_id, outcome) (rate(imagejobs_store_images_total[5m])) * 60)"),
    ("Top stores: mean perimeter (latest window)", "imagejobs_store_mean_perimeter and on (store_id) topk(10, sum by (store_id) (rate(imagejobs_store_images_total[5m])))"),
    ("Where the time goes: p95 per stage (s)", "histogram_quantile(0.95, sum by (le, stage) (rate(imagejobs_stage_seconds_bucket[5m])))"),
]


def dashboard() -> dict:
    panels = []
    for i, (title, expr) in enumerate(PANELS):
        panels.append({
            "id": i + 1, "type": "timeseries", "title": title,
            "datasource": {"type": "prometheus", "uid": "prometheus"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "targets": [{"refId": "A", "expr": expr}],
        })
    return {"uid": "imagejobs", "title": "imagejobs", "schemaVersion": 39, "refresh": "10s",
            "time": {"from": "now-30m", "to": "now"}, "panels": panels}


if __name__ == "__main__":
    out = Path(__file__).parent / "dashboards" / "imagejobs.json"
    out.write_text(json.dumps(dashboard(), indent=2) + "\n")
