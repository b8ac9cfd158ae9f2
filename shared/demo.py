"""`make demo`: submit the DESIGN §2 example (URLs on the local sample image server) 5 s ahead
and watch it go scheduled -> ongoing -> completed; then a job with an unknown store and a
broken URL, which ends failed with its per-store errors. Needs `make run` in another terminal.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

INGEST = f"http://127.0.0.1:{os.environ.get('INGEST_PORT', '8000')}"
STATUS = f"http://127.0.0.1:{os.environ.get('STATUS_PORT', '8001')}"
IMAGES = f"http://127.0.0.1:{os.environ.get('SAMPLE_IMAGES_PORT', '8090')}"
FINAL = {"completed", "failed", "cancelled"}


def example_job(scheduled: datetime) -> dict[str, Any]:
    gallery = f"{IMAGES}/webp/gallery"
    return {
        "count": 2,
        "scheduled_time": scheduled.isoformat(timespec="seconds"),
        "visits": [
            {"store_id": "S00339218", "image_url": [f"{gallery}/2.jpg", f"{gallery}/3.jpg"], "visit_time": "10:00:00"},
            {"store_id": "S01408764", "image_url": [f"{gallery}/3.jpg"], "visit_time": "10:05:00"},
        ],
    }


def failing_job() -> dict[str, Any]:
    return {
        "count": 2,
        "visits": [
            {"store_id": "S_UNKNOWN", "image_url": [f"{IMAGES}/img/640x480.jpg"], "visit_time": "11:00"},
            {"store_id": "S01408764", "image_url": [f"{IMAGES}/img/320x240.png", f"{IMAGES}/status/404"],
             "visit_time": "11:05"},
        ],
    }


def bar(images: dict[str, int], width: int = 30) -> str:
    done = images["succeeded"] + images["failed"]
    filled = width * done // max(images["total"], 1)
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{images['total']}"


def watch(client: httpx.Client, job_id: str, deadline_s: float = 60) -> dict[str, Any]:
    last = None
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        body = client.get(f"{STATUS}/api/status/{job_id}").json()
        line = f"  {body['status']:<10} {bar(body['images'])}"
        if body["status"] != last:
            print(("\n" if last else "") + line, end="", flush=True)
            last = body["status"]
        else:
            print("\r" + line, end="", flush=True)
        if body["status"] in FINAL:
            print()
            return body
        time.sleep(0.25)
    raise SystemExit(f"\njob {job_id} did not finish within {deadline_s:.0f}s")


def main() -> int:
    with httpx.Client(timeout=10) as client:
        try:
            client.get(f"{INGEST}/readyz").raise_for_status()
        except httpx.HTTPError:
            print(f"imagejobs: nothing ready at {INGEST}; start the stack first with `make run`", file=sys.stderr)
            return 2
        scheduled = datetime.now(UTC) + timedelta(seconds=5)
        submitted = client.post(f"{INGEST}/processJob", json=example_job(scheduled)).json()
        print(f"1) example job {submitted['job_id']} scheduled for {submitted['scheduled_time']}")
        first = watch(client, submitted["job_id"])
        results = client.get(f"{STATUS}/api/jobs/{submitted['job_id']}/results").json()["results"]
        for r in results:
            print(f"     {r['store_id']}  {r['width']}x{r['height']}  perimeter {r['perimeter']}")
        submitted = client.post(f"{INGEST}/processJob", json=failing_job()).json()
        print(f"2) job {submitted['job_id']} with an unknown store and a broken URL")
        second = watch(client, submitted["job_id"])
        print("     errors: " + json.dumps(second.get("error", [])))
    ok = first["status"] == "completed" and second["status"] == "failed"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
