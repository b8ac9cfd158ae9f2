"""What the soak (tests/bench/soak.py) runs against and reads each minute: the stack as `make run`
starts it (`python -m deploy.devstack run`: supervisord over Kafka, PostgreSQL, every service,
two processors, store statistics and the sample image server), in a data dir of its own and on
free ports, so it neither touches nor is disturbed by a `make run` already up; or, for the CI
version, a tests/support Stack. Either is reached through a `Target`: URLs, the service
processes, the database, the Kafka data dir and the logs.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.devstack.net import free_port
from deploy.devstack.paths import PROJECT_ROOT
from deploy.devstack.postgres import PostgresServer

# A log line at ERROR (the services' text or JSON format, PostgreSQL's) or a stack trace.
ERROR_LINE = re.compile(r'(\bERROR\b|"level": ?"ERROR"|\bFATAL\b|\bPANIC\b|^Traceback|\| Traceback)')
PORT_SETTINGS = ("KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "POSTGRES_PORT", "INGEST_PORT", "STATUS_PORT",
                 "SCHEDULER_PORT", "STORESTATS_PORT", "SAMPLE_IMAGES_PORT")


@dataclass
class Target:
    ingest: str
    status: str
    scheduler: str
    images: str
    database_url: str
    bootstrap: str
    kafka_dir: Path | None  # the broker's log dir (None: a broker shared with others, not measured)
    pids: Callable[[], dict[str, int]]  # service -> pid, looked up at each reading
    logs: Callable[[], dict[str, list[str]]]  # service -> its log lines so far
    settings: dict[str, str] = field(default_factory=dict)


def rss_mib(pid: int) -> float:
    """Resident set size (VmRSS) of one process, MiB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def disk_mib(path: Path | None) -> float:
    """Disk space the files under `path` take (as `du`: allocated blocks, so a preallocated
    sparse index counts for what it uses)."""
    if path is None:
        return float("nan")
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass  # a segment deleted while walking
    return round(total / 2**20, 1)


HZ = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pids: dict[str, int]) -> dict[str, int]:
    """CPU ticks (user + system) each program and its descendants (PostgreSQL's backends) used
    so far."""
    kids = process_tree()

    def ticks(pid: int) -> int:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            own = int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            own = 0
        return own + sum(ticks(k) for k in kids.get(pid, []))
    return {name: ticks(pid) for name, pid in pids.items()}


def errors_in(logs: dict[str, list[str]]) -> dict[str, int]:
    return {name: n for name, lines in logs.items() if (n := sum(1 for ln in lines if ERROR_LINE.search(ln)))}


def process_tree() -> dict[int, list[int]]:
    """parent pid -> its children's pids, for every process /proc lists now."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _two_free_ports() -> int:
    """A port p with p + 1 free too (the devstack numbers its processors from PROCESSOR_PORT up)."""
    while True:
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue


class DevStack:
    """`python -m deploy.devstack run` in a fresh state dir, on free ports, with `settings`
    added to its environment (the stack passes the caller's environment to every service)."""

    def __init__(self, settings: dict[str, str]) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="imagejobs-soak-"))
        self.root.chmod(0o755)  # PostgreSQL's user must reach its data dir
        self.ports = {name: free_port() for name in PORT_SETTINGS}
        self.ports["PROCESSOR_PORT"] = _two_free_ports()
        self.settings = settings
        self.log_path = self.root / "stack.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, deadline_s: float = 240) -> Target:
        env = {**os.environ, "IMAGEJOBS_STATE_DIR": str(self.root / "state"),
               **{k: str(v) for k, v in self.ports.items()}, **self.settings}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "deploy.devstack", "run"], cwd=PROJECT_ROOT,
                                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + deadline_s
        while "imagejobs is up" not in self.log_path.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > end:
                tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
                self.stop()
                raise RuntimeError(f"the make run stack did not come up:\n{tail}")
            time.sleep(0.5)
        return self.target()

    def target(self) -> Target:
        url = "http://127.0.0.1:{}".format
        pg = PostgresServer(self.ports["POSTGRES_PORT"], self.root / "state" / "postgres")
        return Target(ingest=url(self.ports["INGEST_PORT"]), status=url(self.ports["STATUS_PORT"]),
                      scheduler=url(self.ports["SCHEDULER_PORT"]), images=url(self.ports["SAMPLE_IMAGES_PORT"]),
                      database_url=pg.url, bootstrap=f"127.0.0.1:{self.ports['KAFKA_PORT']}",
                      kafka_dir=self.root / "state" / "kafka" / "logs", pids=self.pids, logs=self.logs,
                      settings=self.settings)

    def pids(self) -> dict[str, int]:
        """Each supervised program's own process: the child of its `deploy.devstack.prefix` wrapper."""
        if self.process is None:
            return {}
        kids, found, todo = process_tree(), {}, [self.process.pid]
        while todo:
            pid = todo.pop()
            cmd = _cmdline(pid)
            if "deploy.devstack.prefix" in cmd and kids.get(pid):
                found[cmd[cmd.index("deploy.devstack.prefix") + 1]] = kids[pid][0]
            else:
                todo += kids.get(pid, [])
        return dict(sorted(found.items()))

    def logs(self) -> dict[str, list[str]]:
        """`name | line` from supervisord's output, by program."""
        out: dict[str, list[str]] = {}
        for line in self.log_path.read_text(errors="replace").splitlines():
            name, sep, rest = line.partition("| ")
            if sep:
                out.setdefault(name.strip(), []).append(rest)
        return out

    def stop(self) -> None:
        """Ctrl-C, as a user stops `make run`; the whole process group killed if that hangs.
        The data dir goes (the soak's figures are already read)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        subprocess.run(["rm", "-rf", str(self.root / "state")], check=False)


def stack_target(stack: Any, services: dict[str, Any], settings: dict[str, str]) -> Target:
    """A tests/support Stack (the CI version): its processes and logs; Kafka is the session's
    broker, shared with other tests, so its data dir is not measured."""
    def names() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for service in stack.processes:
            if service.process.poll() is None and service.name != "sample_images":
                n = sum(1 for k in out if k.startswith(service.name))
                out[f"{service.name}-{n + 1}" if service.name == "processor" else service.name] = service
        return out
    return Target(ingest=services["ingest"].url, status=services["status"].url,
                  scheduler=services["scheduler"].url, images=services["sample_images"].url,
                  database_url=stack.database_url, bootstrap=stack.infra.kafka.bootstrap, kafka_dir=None,
                  pids=lambda: {k: s.process.pid for k, s in names().items()},
                  logs=lambda: {k: s.log_path.read_text(errors="replace").splitlines() for k, s in names().items()},
                  settings=settings)
