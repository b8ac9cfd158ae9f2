"""The soak's verdicts and its section of docs/benchmarks.md (tests/bench/soak_report.py)."""

from __future__ import annotations

from tests.bench.soak_report import HEADING, Minute, kept_section, replace_section, verdicts


def minute(m: int, *, latency: float = 0.01, rss: float = 100.0, pg: float = 50.0, kafka: float = 80.0) -> Minute:
    return Minute(minute=m, submits_per_s=100, submit_p50_ms=5, submit_p99_ms=10, lateness_p99_ms=3,
                  accepted=6000 * m, final=6000 * m, rss_mib={"ingest": rss, "kafka": 900.0 + 50 * m},
                  pg_mib=pg, kafka_mib=kafka, errors=0, cpu_pct=60, latencies=[latency] * 100,
                  lateness={0.005: 90.0, 0.01: 100.0, float("inf"): 100.0})


def by_name(rows: list[Minute], **kw: object) -> dict[str, bool | None]:
    found = verdicts(rows, all_final=True, not_final=0, errors=0, catch_up_min=14, **kw)  # type: ignore[arg-type]
    return {v.criterion.split(":")[0].split(" at ")[0]: v.met for v in found}


def test_a_steady_run_meets_every_criterion() -> None:
    assert set(by_name([minute(m) for m in range(1, 31)]).values()) == {True}


def test_drift_fails_the_criterion_it_touches_and_only_it() -> None:
    rows = [minute(m, latency=0.01 if m < 26 else 0.013) for m in range(1, 31)]
    assert by_name(rows)["submit p99"] is False
    assert by_name(rows)["release lateness p99"] is True
    rows = [minute(m, rss=100 + m) for m in range(1, 31)]  # 105 after warm-up, 130 at the end
    assert by_name(rows)["every service's RSS"] is False
    rows = [minute(m, kafka=80 + 4 * m) for m in range(1, 31)]
    assert by_name(rows)["data sizes"] is False


def test_an_improvement_is_not_a_failure_and_kafkas_own_memory_is_not_a_services() -> None:
    rows = [minute(m, latency=0.02 if m < 6 else 0.01, rss=120 if m < 6 else 100) for m in range(1, 31)]
    assert set(by_name(rows).values()) == {True}


def test_a_short_run_does_not_judge_the_data_sizes() -> None:
    assert by_name([minute(m) for m in range(1, 5)])["PostgreSQL and Kafka data flat once retention caught up"] is None


def test_the_section_is_replaced_in_place_and_kept_by_a_rewrite() -> None:
    doc = "# Benchmarks\n\ntext\n\n## Other\n\nmore\n"
    once = replace_section(doc, f"{HEADING}\n\nfirst\n")
    assert once.endswith(f"{HEADING}\n\nfirst\n")
    middle = once + "\n## Later\n\nlast\n"
    twice = replace_section(middle, f"{HEADING}\n\nsecond\n")
    assert "first" not in twice and twice.count(HEADING) == 1
    assert twice.index("## Other") < twice.index("second") < twice.index("## Later")
    assert kept_section(twice).rstrip("\n") == f"{HEADING}\n\nsecond"
    assert kept_section(doc) == ""
