"""The soak's figures (tests/bench/soak.py): one row a minute, the verdict on each of issue 22's
criteria, the markdown section of docs/benchmarks.md and the plot. Pure but for the plot."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench.stages import quantile
from tests.bench.timing import pct

HEADING = "## Soak (`make soak-load`)"
INFRA = ("kafka", "postgres", "images")  # programs that are not imagejobs services


@dataclass
class Minute:
    minute: int
    submits_per_s: float
    submit_p50_ms: float
    submit_p99_ms: float
    lateness_p99_ms: float
    accepted: int  # so far
    final: int  # confirmed final so far (status API)
    rss_mib: dict[str, float]
    pg_mib: float
    kafka_mib: float
    errors: int  # so far
    cpu_pct: float  # the whole machine's busy share
    cpu_share: dict[str, float] = field(default_factory=dict)  # program -> % of one core this minute
    latencies: list[float] = field(default_factory=list, repr=False)  # submit seconds, this minute
    lateness: dict[float, float] = field(default_factory=dict, repr=False)  # bucket deltas, this minute


@dataclass
class Verdict:
    criterion: str
    met: bool | None  # None: the run was too short to judge it
    figures: str


def windows(minutes: int) -> int:
    """Minutes in the first and last windows: 5, or a third of a short run."""
    return 5 if minutes >= 15 else max(1, minutes // 3)


def _lateness_p99(rows: list[Minute]) -> float:
    summed: dict[float, float] = {}
    for row in rows:
        for bound, count in row.lateness.items():
            summed[bound] = summed.get(bound, 0.0) + count
    return round(1000 * quantile(summed, 0.99), 1) if summed else float("nan")


def _submit_p99(rows: list[Minute]) -> float:
    values = [v for row in rows for v in row.latencies]
    return round(1000 * pct(values, 0.99), 1) if values else float("nan")


def _within(last: float, first: float, share: float) -> bool:
    return not math.isnan(last) and not math.isnan(first) and last <= first * (1 + share)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def verdicts(rows: list[Minute], *, all_final: bool, not_final: int, errors: int,
             catch_up_min: int) -> list[Verdict]:
    """Each criterion of the soak: met, not met, or not judged, with the figures it rests on."""
    n, w = len(rows), windows(len(rows))
    first, last = rows[:w], rows[-w:]
    out = [Verdict("every job final", all_final, f"{rows[-1].final:,} of {rows[-1].accepted:,} final"
                   f" ({not_final} not)" if rows else "no rows")]
    for name, measure in (("submit p99", _submit_p99), ("release lateness p99", _lateness_p99)):
        a, b = measure(first), measure(last)
        out.append(Verdict(f"{name}: last {w} min ≤ first {w} min + 20%", _within(b, a, 0.20),
                           f"{a:,} → {b:,} ms"))
    base = rows[w - 1].rss_mib if rows else {}
    grown = {s: (rows[-1].rss_mib.get(s, 0.0), mib) for s, mib in base.items() if s not in INFRA}
    worst = max(grown, key=lambda s: grown[s][0] / grown[s][1] if grown[s][1] else math.inf, default="")
    ok = bool(grown) and all(_within(now, then, 0.10) for now, then in grown.values())
    out.append(Verdict(f"every service's RSS at the end ≤ after warm-up (minute {w}) + 10%", ok,
                       ", ".join(f"{s} {then:,} → {now:,} MiB" for s, (now, then) in grown.items())
                       + (f" (most grown: {worst})" if worst else "")))
    start = catch_up_min
    if start + 2 * w > n:
        out.append(Verdict("PostgreSQL and Kafka data flat once retention caught up", None,
                           f"not judged: retention catches up by minute {catch_up_min}; the run has {n}"))
    else:
        settled = rows[start:start + w]
        parts, ok = [], True
        for label, key in (("PostgreSQL", "pg_mib"), ("Kafka", "kafka_mib")):
            a, b = _mean([getattr(r, key) for r in settled]), _mean([getattr(r, key) for r in last])
            if math.isnan(a):
                parts.append(f"{label} not measured")
                continue
            ok = ok and _within(b, a, 0.10)
            parts.append(f"{label} {a:,.1f} → {b:,.1f} MiB")
        out.append(Verdict(f"data sizes: mean of the last {w} min ≤ mean of minutes {start + 1}-{start + w} + 10%",
                           ok, "; ".join(parts)))
    out.append(Verdict("0 errors", errors == 0, f"{errors}"))
    return out


def service_names(rows: list[Minute]) -> list[str]:
    return sorted({s for r in rows for s in r.rss_mib if s not in INFRA}) + [
        s for s in ("kafka",) if any(s in r.rss_mib for r in rows)]


def line(row: Minute) -> str:
    """The line printed each minute."""
    rss = " ".join(f"{s}={v:.0f}" for s, v in row.rss_mib.items() if s != "images")
    return (f"min {row.minute:>2} | {row.submits_per_s:6.1f}/s | submit p50/p99 {row.submit_p50_ms:.1f}/"
            f"{row.submit_p99_ms:.1f} ms | lateness p99 {row.lateness_p99_ms:.1f} ms | final "
            f"{row.final:,}/{row.accepted:,} | RSS MiB {rss} | PG {row.pg_mib:.0f} MiB | Kafka {row.kafka_mib:.0f}"
            f" MiB | cpu {row.cpu_pct:.0f}% ({' '.join(f'{s}={v:.0f}' for s, v in row.cpu_share.items())})"
            f" | errors {row.errors}")


def table(rows: list[Minute]) -> list[str]:
    names = service_names(rows)
    out = ["| min | submits/s | submit p50 / p99 ms | lateness p99 ms | final / accepted | "
           + " | ".join(f"{s} MiB" for s in names) + " | PG MiB | Kafka MiB | CPU % | errors |",
           "|" + "---|" * (9 + len(names))]
    for r in rows:
        out.append(f"| {r.minute} | {r.submits_per_s:.1f} | {r.submit_p50_ms:.1f} / {r.submit_p99_ms:.1f} | "
                   f"{r.lateness_p99_ms:.1f} | {r.final:,} / {r.accepted:,} | "
                   + " | ".join(f"{r.rss_mib.get(s, 0):.0f}" for s in names)
                   + f" | {r.pg_mib:.0f} | {r.kafka_mib:.0f} | {r.cpu_pct:.0f} | {r.errors} |")
    return out


def verdict_lines(found: list[Verdict]) -> list[str]:
    word = {True: "met", False: "**not met**", None: "not judged"}
    return [f"- {v.criterion}: {word[v.met]} ({v.figures})" for v in found]


def section(rows: list[Minute], found: list[Verdict], intro: str, plot: str) -> str:
    return "\n".join([HEADING, "", intro, "", *table(rows), "", *verdict_lines(found), "",
                      f"![soak, minute by minute]({plot})", ""])


def replace_section(doc: str, new: str) -> str:
    """`doc` with its soak section replaced by `new` (appended when it has none)."""
    start = doc.find(HEADING)
    if start < 0:
        return doc.rstrip("\n") + "\n\n" + new
    end = doc.find("\n## ", start + len(HEADING))
    return doc[:start] + new + ("" if end < 0 else "\n" + doc[end + 1:])


def kept_section(doc: str) -> str:
    """The soak section of `doc` ("" when none): `make bench` rewrites the file and keeps it."""
    start = doc.find(HEADING)
    if start < 0:
        return ""
    end = doc.find("\n## ", start + len(HEADING))
    return doc[start:] if end < 0 else doc[start:end + 1]


def plot(rows: list[Minute], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r.minute for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), sharex=True)
    ax = axes[0][0]
    ax.plot(x, [r.submit_p50_ms for r in rows], label="submit p50")
    ax.plot(x, [r.submit_p99_ms for r in rows], label="submit p99")
    ax.plot(x, [r.lateness_p99_ms for r in rows], label="release lateness p99")
    ax.set_ylabel("ms")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    for name in service_names(rows):
        ax.plot(x, [r.rss_mib.get(name, float("nan")) for r in rows], label=name)
    ax.set_ylabel("RSS MiB")
    ax.legend(fontsize=7, ncol=2)
    ax = axes[1][0]
    ax.plot(x, [r.pg_mib for r in rows], label="PostgreSQL database")
    ax.plot(x, [r.kafka_mib for r in rows], label="Kafka log dir")
    ax.set_ylabel("MiB")
    ax.set_xlabel("minute")
    ax.legend(fontsize=8)
    ax = axes[1][1]
    ax.plot(x, [r.submits_per_s for r in rows], label="submits/s answered 200")
    ax.plot(x, [r.accepted - r.final for r in rows], label="jobs accepted, not yet seen final")
    ax.plot(x, [r.cpu_pct for r in rows], label="machine CPU busy %")
    ax.set_xlabel("minute")
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
