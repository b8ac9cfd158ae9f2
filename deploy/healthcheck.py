"""`python -m deploy.healthcheck PORT`: exit 0 when the service on 127.0.0.1:PORT answers
`/readyz` with 200 (its Kafka, PostgreSQL and own checks pass), else 1. The containers'
healthcheck: the images have no curl, and this needs nothing beyond the standard library."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request


def ready(port: int, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


if __name__ == "__main__":
    sys.exit(0 if ready(int(sys.argv[1])) else 1)
