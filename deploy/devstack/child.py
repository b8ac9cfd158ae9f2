"""What the local Kafka broker and PostgreSQL server have in common: a child process in its own
session, logging to a file, that must not die during start-up and stops with a signal."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.devstack.errors import LauncherError
from deploy.devstack.net import tail


@dataclass
class ChildServer:
    """The base of a server dataclass that has a `data_dir` field."""

    name = "server"
    log_name = "server.log"
    stop_signal = 15  # SIGTERM
    log_path: Path | None = field(default=None, kw_only=True)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False, kw_only=True)

    @property
    def log_file(self) -> Path:
        data_dir: Path = vars(self)["data_dir"]  # the subclass's field
        return self.log_path or data_dir / self.log_name

    def spawn(self, command: list[str], **options: Any) -> None:
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, **options)

    def check_alive(self) -> None:
        """Raise, with the log's tail, if the server exited while starting."""
        if self.process is not None and self.process.poll() is not None:
            raise LauncherError(f"{self.name} exited with code {self.process.returncode} during start-up; "
                                f"log tail:\n{tail(self.log_file)}")

    def not_ready(self, what: str, deadline_s: float) -> LauncherError:
        return LauncherError(f"{self.name} did not {what} within {deadline_s:.0f}s; log tail:\n{tail(self.log_file)}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """`stop_signal` (a controlled shutdown), then SIGKILL after `timeout_s`."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(self.stop_signal)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
