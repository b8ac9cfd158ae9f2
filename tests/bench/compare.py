"""Before and after, in one run: the speed goals that every change must not make slower (the
burst, one job on an idle stack, the front door under overload), measured on this tree and on
an earlier commit's, alternately, on the same broker, database server and image server.

    .venv/bin/python -m tests.bench.compare [REF]      # REF: default the session's base commit

The earlier tree is a git worktree under .state/bench-before/<ref>; its services run with this
virtualenv (the dependencies are the same). Prints a table and returns the figures; `make
bench` includes them in docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from deploy.devstack.net import free_port
from deploy.devstack.paths import PROJECT_ROOT
from tests.bench import peers as peer_tools
from tests.bench.burst import run_burst
from tests.bench.frontdoor import overload
from tests.bench.timing import one_job_latencies, summary
from tests.support.stack import Infra, Stack

BEFORE = os.environ.get("BENCH_BEFORE", "b17ea4c")  # the last commit before this stop's changes (issue 20)
ROUNDS = 2


def worktree(ref: str) -> Path:
    """A checkout of `ref` beside the project (made once, reused)."""
    path = PROJECT_ROOT / ".state" / "bench-before" / ref
    if not (path / "services").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--detach", "--force", str(path), ref], cwd=PROJECT_ROOT,
                       check=True, capture_output=True)
    return path


def measure(infra: Infra, base: str, root: Path, quick: bool) -> dict[str, Any]:
    from tests.bench.pipeline import run  # uvloop for the load generator

    stack = Stack(infra, env={"PROCESSOR_GPU_DELAY_MS": "0", "LOG_LEVEL": "WARNING"}, root=root)
    try:
        services = stack.start_all(processors=2)
        stack.wait_partitions_shared()
        ingest, status = services["ingest"].url, services["status"].url
        run(run_burst(ingest, status, base, jobs=300, lead_s=5))  # warm-up
        burst = run(run_burst(ingest, status, base, jobs=300 if quick else 1000))
        one = summary(run(one_job_latencies(ingest, status, base, 20 if quick else 60)))
        door = run(overload(ingest, base, rate=500, seconds=5 if quick else 12))
        return {"burst_images_per_s": burst["images_per_s"], "one_job_p50_ms": one["p50_ms"],
                "one_job_p99_ms": one["p99_ms"], "front_door_p99_ms": door["p99_ms"],
                "front_door_200s": door["answers"].get("200", 0)}
    finally:
        stack.stop()


def compare(infra: Infra, base: str, ref: str = BEFORE, quick: bool = False) -> dict[str, Any]:
    """ROUNDS alternations of before and after; the median of each figure per side."""
    trees = {"before": worktree(ref), "after": PROJECT_ROOT}
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for _ in range(ROUNDS):
        for side, root in trees.items():
            runs[side].append(measure(infra, base, root, quick))
    figures = {side: {k: statistics.median(r[k] for r in rows if r[k] is not None) for k in rows[0]}
               for side, rows in runs.items()}
    return {"ref": ref, "rounds": ROUNDS, "runs": runs, **figures}


def lines(result: dict[str, Any]) -> list[str]:
    """Markdown rows for docs/benchmarks.md."""
    before, after, runs = result["before"], result["after"], result.get("runs", {})
    out = [f"Before (`{result['ref']}`) and after (this tree), alternated {result['rounds']} times in this run:"
           " medians, then each run in order", "",
           "| figure | before | after | before, each run | after, each run |", "|---|---|---|---|---|"]
    for key in ("burst_images_per_s", "one_job_p50_ms", "one_job_p99_ms", "front_door_p99_ms"):
        each = {side: ", ".join(f"{run[key]:,.1f}" for run in runs.get(side, [])) for side in ("before", "after")}
        out.append(f"| {key} | {before[key]:,.1f} | {after[key]:,.1f} | {each['before']} | {each['after']} |")
    return out


def main() -> int:
    quick = os.environ.get("BENCH_QUICK") == "1"
    ref = sys.argv[1] if len(sys.argv) > 1 else BEFORE
    infra = Infra.start()
    port = free_port()
    images = peer_tools.start_image_server(port)
    try:
        result = compare(infra, f"http://127.0.0.1:{port}", ref, quick)
    finally:
        peer_tools.stop(images)
        infra.stop()
    print(json.dumps(result, indent=2, default=str))
    print("\n".join(lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
