"""The dev stack's PostgreSQL launcher connects only once the server says it accepts
connections (deploy/devstack/postgres.py::accepting_connections): connecting in the few ms of
its start-up made the server log a FATAL line, counted as an error by the soak."""

from __future__ import annotations

from pathlib import Path

from deploy.devstack.postgres import accepting_connections

HEAD = ["4242", "/data/pgdata", "1765000000", "5432", "/run", "127.0.0.1", "  5432001     32768"]


def test_not_until_the_status_line_reads_ready(tmp_path: Path) -> None:
    assert not accepting_connections(tmp_path)  # no postmaster.pid yet
    pid_file = tmp_path / "postmaster.pid"
    pid_file.write_text("\n".join(HEAD) + "\n")  # written before the status line
    assert not accepting_connections(tmp_path)
    pid_file.write_text("\n".join([*HEAD, "starting"]) + "\n")
    assert not accepting_connections(tmp_path)
    pid_file.write_text("\n".join([*HEAD, "ready   "]) + "\n")
    assert accepting_connections(tmp_path)
