"""Real Kafka, real PostgreSQL and the real services as processes, for tests and benchmarks.

Infrastructure starts once per session on free ports (so a running `make run` is never
disturbed) with the launcher's own code; each service is a `python -m services.<name>`
process with its environment; everything is stopped at the end, even when tests fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from deploy.devstack.kafka import KafkaBroker
from deploy.devstack.net import free_port
from deploy.devstack.paths import PROJECT_ROOT
from deploy.devstack.postgres import PostgresServer
from deploy.stores import import_stores
from shared.db import apply_migrations

STORE_MASTER = PROJECT_ROOT / "data" / "StoreMasterAssignment.csv"


@dataclass
class Infra:
    root: Path
    kafka: KafkaBroker
    pg: PostgresServer

    @classmethod
    def start(cls) -> Infra:
        root = Path(tempfile.mkdtemp(prefix="imagejobs-test-"))
        root.chmod(0o755)  # the postgres user must reach its data dir
        kafka = KafkaBroker(free_port(), free_port(), root / "kafka", heap="512m")
        kafka.data_dir.mkdir(parents=True)
        pg = PostgresServer(free_port(), root / "postgres")
        pg.start()
        kafka.start()
        try:
            pg.wait_ready()
            kafka.wait_ready()
        except Exception:
            cls(root, kafka, pg).stop()
            raise
        return cls(root, kafka, pg)

    def stop(self) -> None:
        """Kafka is killed outright; PostgreSQL gets a fast shutdown, which also ends its worker
        processes. Then their data goes (see `discard_data`); the services' logs stay."""
        if self.kafka.process and self.kafka.process.poll() is None:
            self.kafka.process.kill()
            self.kafka.process.wait()
        self.pg.stop(timeout_s=15)
        discard_data(self.kafka.data_dir, self.pg.data_dir)


def discard_data(*data_dirs: Path) -> None:
    """Remove stopped servers' data directories: a test session or `make bench` leaves 0.5-2 GB
    otherwise, and a machine that runs them all day fills its disk (one did, to 97%). Set
    IMAGEJOBS_KEEP_TEST_DATA=1 to keep them for a post-mortem; logs are kept either way."""
    if os.environ.get("IMAGEJOBS_KEEP_TEST_DATA") == "1":
        return
    for data_dir in data_dirs:
        shutil.rmtree(data_dir, ignore_errors=True)


@dataclass
class ServiceProcess:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def refused_at_start(infra: Infra, service: str, settings: dict[str, str]) -> str:
    """What `service` printed when started with `settings` it cannot read (and only the
    infrastructure besides): it must stop at once with exit code 2 and one line, no traceback."""
    env = {"PATH": "/usr/bin:/bin", "KAFKA_BOOTSTRAP_SERVERS": infra.kafka.bootstrap, "DATABASE_URL": infra.pg.url,
           "INGEST_PORT": "1", "STATUS_PORT": "1", **settings}
    ran = subprocess.run([sys.executable, "-m", f"services.{service}"], cwd=PROJECT_ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    output = ran.stdout + ran.stderr
    assert ran.returncode == 2 and "Traceback" not in output, output
    assert len(output.strip().splitlines()) == 1, output
    return output


MODULE = {"sample_images": "deploy.devstack.sample_images"}  # development tooling; the rest are services.<name>
PORT_SETTING = {"ingest": "INGEST_PORT", "status": "STATUS_PORT", "scheduler": "SCHEDULER_PORT",
                "processor": "PROCESSOR_PORT", "sample_images": "SAMPLE_IMAGES_PORT", "storestats": "STORESTATS_PORT"}


@dataclass
class Stack:
    """The four services (and an image server) against one Infra, under one topic prefix."""

    infra: Infra
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}")
    env: dict[str, str] = field(default_factory=dict)
    processes: list[ServiceProcess] = field(default_factory=list)
    # the source tree the services run from (`make bench` compares an earlier commit's
    # worktree with this one, on the same broker and database server)
    root: Path = PROJECT_ROOT

    def __post_init__(self) -> None:
        """Each stack gets its own database, as each deployment would: services own tables
        whose rows are not scoped by topic prefix (the scheduler loads pending jobs by partition)."""
        server = self.infra.pg.url.rsplit("/", 1)[0]
        self.database_url = f"{server}/{self.prefix}"
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.prefix}"')
        if self.root == PROJECT_ROOT:
            asyncio.run(apply_migrations(self.database_url))
        else:  # an earlier tree: its own schema
            subprocess.run([sys.executable, "-c", "import asyncio, sys; from shared.db import apply_migrations;"
                            " asyncio.run(apply_migrations(sys.argv[1]))", self.database_url],
                           cwd=self.root, env={**os.environ, "PYTHONPATH": str(self.root)}, check=True)
        import_stores(self.database_url, STORE_MASTER)

    def base_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.infra.kafka.bootstrap,
            "DATABASE_URL": self.database_url,
            "KAFKA_TOPIC_PREFIX": self.prefix,
            "IMAGE_ALLOW_PRIVATE_NETWORKS": "true",
            "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",  # the tests' receivers are on loopback too
            "PROCESSOR_GPU_DELAY_MS": "0",
            "IMAGE_RETRY_BASE_S": "0.05",
            "PYTHONUNBUFFERED": "1",
            "STATUS_STREAM_HEARTBEAT_S": "0.5",  # progress streams' heartbeats are seen within a test
            "STORESTATS_DATA_DIR": str(self.infra.root / f"{self.prefix}-storestats"),
            **self.env,
        }

    def start_service(self, name: str, extra_env: dict[str, str] | None = None,
                      port: int | None = None) -> ServiceProcess:
        port = port or free_port()
        log_path = self.infra.root / f"{self.prefix}-{name}-{port}.log"
        env = {**self.base_env(), PORT_SETTING[name]: str(port), **(extra_env or {})}
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", MODULE.get(name, f"services.{name}")], cwd=self.root,
                                    env={**env, "PYTHONPATH": str(self.root)}, stdout=log, stderr=subprocess.STDOUT)
        service = ServiceProcess(name, port, proc, log_path)
        self.processes.append(service)
        return service

    def wait_ready(self, service: ServiceProcess, deadline_s: float = 60.0) -> None:
        path = "/healthz" if service.name == "sample_images" else "/readyz"
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if service.process.poll() is not None:
                raise RuntimeError(f"{service.name} exited:\n{service.log_tail()}")
            try:
                if httpx.get(service.url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{service.name} not ready in {deadline_s}s:\n{service.log_tail()}")

    def start_all(self, processors: int = 1) -> dict[str, ServiceProcess]:
        names = ["sample_images", "ingest", "scheduler", "status"] + ["processor"] * processors
        started = [self.start_service(n) for n in names]
        for service in started:
            self.wait_ready(service)
        return {s.name: s for s in started}

    def restart(self, service: ServiceProcess, sig: int = signal.SIGKILL) -> ServiceProcess:
        """Stop `service` with `sig` (kill -9 by default), start it again on the same port."""
        service.stop(sig)
        self.processes.remove(service)
        fresh = self.start_service(service.name, port=service.port)
        self.wait_ready(fresh)
        return fresh

    def wait_partitions_shared(self, name: str = "processor", deadline_s: float = 30.0) -> None:
        """Wait until every running `name` instance owns at least one partition (the group has
        settled), so work is spread across them from the first task."""
        def settled() -> bool:
            running = [p for p in self.processes if p.name == name and p.process.poll() is None]
            return all(httpx.get(p.url + "/readyz", timeout=5).json().get("assigned_partitions") for p in running)
        end = time.monotonic() + deadline_s
        while not settled():
            if time.monotonic() > end:
                raise RuntimeError(f"{name} instances did not all get partitions in {deadline_s}s")
            time.sleep(0.1)

    def stop(self) -> None:
        for service in self.processes:
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        for service in self.processes:
            service.stop()
