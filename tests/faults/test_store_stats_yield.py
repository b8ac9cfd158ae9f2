"""The store statistics wait for the core on a saturated machine (services/storestats/yielding.py),
on the real stack: with every CPU kept busy by other processes, counting waits (its gauge says
so, /readyz stays green) and holds the records that arrive meanwhile, never longer than
STORESTATS_YIELD_MAX_S at a time, so the counts still arrive while the load goes on; once it
ends, counting no longer waits, and every image is counted exactly once."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx

from tests.support.client import Client
from tests.support.stack import ServiceProcess
from tests.support.waiting import wait_for

MAX_WAIT_S = 10.0
STORE = "S00339218"


def _metric(service: ServiceProcess, name: str, labels: str = "") -> float:
    text = httpx.get(service.url + "/metrics", timeout=5).text
    match = re.search(rf"^{name}{re.escape(labels)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def _store_images(service: ServiceProcess) -> float:
    """What the statistics export for STORE: every image counted once (repeats are not)."""
    return _metric(service, "imagejobs_store_images_total", f'{{outcome="succeeded",reason="",store_id="{STORE}"}}')


def _waiting(service: ServiceProcess) -> bool:
    return _metric(service, "imagejobs_storestats_waiting_for_cpu") == 1


@contextmanager
def every_cpu_busy() -> Iterator[None]:
    """One busy loop per CPU the machine has (what /proc/stat adds up), at the statistics' own
    niceness (19): nothing but their own wait holds them back, which is what is tested."""
    cpus = sum(1 for line in Path("/proc/stat").read_text().splitlines() if re.match(r"cpu\d+ ", line))
    burners = [subprocess.Popen([sys.executable, "-c", "import os; os.nice(19)\nwhile True: pass"])
               for _ in range(cpus)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def test_counting_waits_while_the_cpus_are_busy_at_most_the_max_wait_and_counts_every_image(
        fault_client: Client) -> None:
    stack = fault_client.stack
    stats = stack.start_service("storestats", extra_env={"STORESTATS_YIELD_MAX_S": str(MAX_WAIT_S)})
    stack.wait_ready(stats)
    images = [fault_client.image(20 + i, 30) for i in range(12)]

    def job() -> dict[str, object]:
        return {"count": 1, "scheduled_time": datetime.now(UTC).isoformat(),
                "visits": [{"store_id": STORE, "visit_time": "10:00", "image_url": images}]}
    with every_cpu_busy():
        wait_for(lambda: _waiting(stats), 30, "the store statistics to wait for the busy CPUs")
        waits_before = _metric(stats, "imagejobs_storestats_cpu_waits_total", '{ended="max wait"}')
        fault_client.wait_final(fault_client.submit_ok(job()), 60)
        # the same wait still under way (it began before the submit): the outcomes are held
        held = _store_images(stats)
        still = _waiting(stats) and waits_before == _metric(stats, "imagejobs_storestats_cpu_waits_total",
                                                             '{ended="max wait"}')
        assert still, f"the job took longer than one wait ({MAX_WAIT_S:g} s): nothing shown held"
        assert held == 0, "counted during a wait"
        assert httpx.get(stats.url + "/readyz", timeout=10).status_code == 200, "a deliberate wait is not a stall"
        # the load goes on, yet the counts come: no wait is longer than MAX_WAIT_S
        wait_for(lambda: _store_images(stats) >= len(images), MAX_WAIT_S + 30,
                 "the images counted while the CPUs stay busy")
        assert _metric(stats, "imagejobs_storestats_cpu_waits_total", '{ended="max wait"}') > waits_before
    wait_for(lambda: not _waiting(stats), 30, "counting to stop waiting once the CPUs are free")
    fault_client.wait_final(fault_client.submit_ok(job()), 60)
    wait_for(lambda: _store_images(stats) >= 2 * len(images), 30, "the second job counted on an idle machine")
    assert _store_images(stats) == 2 * len(images), "every image counted once"
    assert _metric(stats, "imagejobs_storestats_cpu_waits_seconds_total") > 0
