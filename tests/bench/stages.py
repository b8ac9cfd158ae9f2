"""Where the time goes: the `imagejobs_stage_seconds` histograms scraped from every service's
`/metrics`, as the difference between two scrapes (so one scenario's images only)."""

from __future__ import annotations

from collections import defaultdict

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shared.metrics import STAGES

Histograms = dict[str, dict[float, float]]  # stage -> upper bound -> cumulative count (+ "sum")


def scrape(urls: list[str]) -> Histograms:
    """Stage histograms summed over the services at `urls` (bucket bound -> count; -1 -> sum)."""
    out: Histograms = defaultdict(lambda: defaultdict(float))
    for url in urls:
        text = httpx.get(f"{url}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            if family.name != "imagejobs_stage_seconds":
                continue
            for sample in family.samples:
                stage = sample.labels.get("stage", "")
                if sample.name.endswith("_bucket"):
                    out[stage][float(sample.labels["le"])] += sample.value
                elif sample.name.endswith("_sum"):
                    out[stage][-1.0] += sample.value
    return out


def quantile(buckets: dict[float, float], q: float) -> float:
    """The q-quantile by linear interpolation inside the bucket it falls in (as Prometheus'
    histogram_quantile does)."""
    bounds = sorted(b for b in buckets if b >= 0)
    total = buckets[bounds[-1]]
    if total <= 0:
        return float("nan")
    rank, previous_bound, previous_count = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return previous_bound
            width = count - previous_count
            return previous_bound + (bound - previous_bound) * ((rank - previous_count) / width if width else 1)
        previous_bound, previous_count = bound, count
    return previous_bound


def breakdown(before: Histograms, after: Histograms) -> list[dict[str, float | str]]:
    """Per stage: images observed, mean, p50 and p99 in ms, between two scrapes."""
    rows: list[dict[str, float | str]] = []
    for stage in STAGES:
        delta = {b: after.get(stage, {}).get(b, 0.0) - before.get(stage, {}).get(b, 0.0)
                 for b in after.get(stage, {})}
        count = delta.get(float("inf"), 0.0)
        if count <= 0:
            continue
        rows.append({"stage": stage, "count": int(count),
                     "mean_ms": round(1000 * delta.get(-1.0, 0.0) / count, 1),
                     "p50_ms": round(1000 * quantile(delta, 0.5), 1),
                     "p99_ms": round(1000 * quantile(delta, 0.99), 1)})
    return rows
