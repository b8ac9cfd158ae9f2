"""`make compose-test`: the compose deployment built and run for real (deploy/docker/prepare.sh
makes the Docker engine, Compose and the base image available first). One project per run, torn
down with its volumes at the end; the figures are printed in the summary."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.compose.deployment import Deployment

FIGURES: dict[str, object] = {}


@pytest.fixture(scope="session")
def deployment() -> Iterator[Deployment]:
    running = Deployment()
    try:
        running.timed("build_s", "build")
        running.figures["images_built"] = len(set(running.compose("config", "--images").split()))
        running.timed("up_to_healthy_s", "up", "-d", "--wait")
        yield running
    except Exception:
        print(running.logs_tail())
        raise
    finally:
        FIGURES.update(running.figures)
        running.compose("down", "-v", "--remove-orphans", timeout_s=300)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.write_line("compose-test figures: " + ", ".join(f"{k}={v}" for k, v in FIGURES.items()))
