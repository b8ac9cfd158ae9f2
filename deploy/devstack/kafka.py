"""A single-node Apache Kafka broker in KRaft mode, run from Maven Central jars on Java 17+.

The data dir survives broker restarts (the fault tests restart it under load); the
storage is formatted once, the first time the data dir is used.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from deploy.devstack.child import ChildServer
from deploy.devstack.errors import LauncherError
from deploy.devstack.net import require_free_port
from deploy.devstack.paths import KAFKA_LIB, KAFKA_POM

LOG4J_CONFIG = Path(__file__).with_name("log4j2.xml")
# The local broker is a development broker sharing a small machine with the whole stack: its JIT
# compiles with C1 only. Fully tiered (C2), the compiler threads were most of the broker's CPU in
# the bursts of a fresh stack (0.2-0.9 CPU s per 10,000 images, against 0.3 s of request
# handling) and recompile for every new traffic shape; C1-compiled request handling measured the
# same within noise (docs/benchmarks.md). A broker of docker-compose.yml keeps the JVM's default.
DEV_JVM_OPTS = "-XX:TieredStopAtLevel=1"


def java_binary() -> str:
    """The `java` to run the broker with: `$JAVA_HOME/bin/java`, else the one on PATH (17+)."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not candidate or not Path(candidate).exists():
        raise LauncherError(
            "Kafka needs Java 17 or newer, and no `java` was found: install it "
            "(apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )
    out = subprocess.run([candidate, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)', out.stderr + out.stdout)
    if not match or int(match.group(1)) < 17:
        raise LauncherError(
            f"Kafka 4 needs Java 17 or newer, but {candidate} is "
            f"{match.group(1) if match else 'unknown'}: install Java 17+ or set JAVA_HOME"
        )
    return candidate


def ensure_jars() -> Path:
    """Copy the broker's jars from Maven Central (cached in ~/.m2) into deploy/kafka/lib."""
    marker = KAFKA_LIB / ".complete"
    if marker.exists() and marker.stat().st_mtime >= KAFKA_POM.stat().st_mtime:
        return KAFKA_LIB
    mvn = shutil.which("mvn")
    if not mvn:
        raise LauncherError("Maven (`mvn`) is needed to fetch the Kafka jars: apt-get install maven")
    shutil.rmtree(KAFKA_LIB, ignore_errors=True)
    result = subprocess.run(
        [mvn, "-B", "-q", "-f", str(KAFKA_POM), "dependency:copy-dependencies"],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        last = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise LauncherError("fetching the Kafka jars with Maven failed: " + " | ".join(last))
    marker.touch()
    return KAFKA_LIB


def new_cluster_id() -> str:
    """A KRaft cluster id (every node of one cluster is formatted with the same)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


PROPERTIES = "server.properties"  # in the data dir


@dataclass
class KafkaBroker(ChildServer):
    """One KRaft broker+controller on 127.0.0.1:`port` with its data under `data_dir`."""

    port: int
    controller_port: int
    data_dir: Path
    heap: str = "768m"
    # Extra JVM options (KAFKA_JVM_OPTS for `make run`); by default the JIT stops at its first
    # tier (DEV_JVM_OPTS says why)
    jvm_opts: str = ""
    # A node of a multi-broker cluster (tests): its id, every controller as `id@host:port`,
    # the cluster id all nodes are formatted with, and the internal topics' replication.
    node_id: int = 1
    voters: str | None = None
    cluster_id: str | None = None
    replication: int = 1
    name = "Kafka"
    log_name = "broker.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def prepare(self) -> None:
        """Write the config and format the log dir once (idempotent)."""
        log_dirs = self.data_dir / "logs"
        log_dirs.mkdir(parents=True, exist_ok=True)
        (self.data_dir / PROPERTIES).write_text(_server_properties(self, log_dirs))
        if (log_dirs / "meta.properties").exists():
            return
        result = subprocess.run(
            [*self._java_prefix(), "kafka.tools.StorageTool", "format",
              # "--cluster-id=": a random id may start with "-", which argparse would take for an option
             f"--cluster-id={self.cluster_id or new_cluster_id()}", "-c", str(self.data_dir / PROPERTIES),
             "--ignore-formatted"],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise LauncherError("formatting the Kafka log dir failed: " + result.stderr.strip()[-400:])

    def command(self) -> list[str]:
        return [*self._java_prefix(), "kafka.Kafka", str(self.data_dir / PROPERTIES)]

    def _java_prefix(self) -> list[str]:
        return [
            java_binary(), "-Xms256m", f"-Xmx{self.heap}", "-XX:+UseG1GC",
            *(self.jvm_opts or DEV_JVM_OPTS).split(),
            "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            "-cp", f"{ensure_jars()}/*",
        ]

    def start(self) -> None:
        """Start the broker as a child process logging to `log_path`."""
        require_free_port(self.port, "Kafka", "KAFKA_PORT")
        require_free_port(self.controller_port, "Kafka's controller", "KAFKA_CONTROLLER_PORT")
        self.prepare()
        self.spawn(self.command())

    def wait_ready(self, deadline_s: float = 60.0) -> None:
        """Block until the broker answers a metadata request, or fail with its log tail."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            self.check_alive()
            if asyncio.run(answers_metadata(self.bootstrap)):
                return
            time.sleep(0.2)
        raise self.not_ready(f"answer on {self.bootstrap}", deadline_s)


async def answers_metadata(bootstrap: str) -> bool:
    """True when a broker at `bootstrap` answers a metadata request with a live broker list."""
    import logging

    from aiokafka import AIOKafkaClient  # local import: keeps `--help` fast

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # refused connections are expected
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await asyncio.wait_for(client.bootstrap(), 3)
        return bool(client.cluster.brokers())
    except Exception:  # any failure means "not yet"
        return False
    finally:
        await client.close()


def _server_properties(broker: KafkaBroker, log_dirs: Path) -> str:
    rf, isr = broker.replication, max(1, broker.replication - 1)
    return "\n".join([
        "process.roles=broker,controller",
        f"node.id={broker.node_id}",
        f"controller.quorum.voters={broker.voters or f'1@127.0.0.1:{broker.controller_port}'}",
        f"listeners=PLAINTEXT://127.0.0.1:{broker.port},CONTROLLER://127.0.0.1:{broker.controller_port}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{broker.port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={log_dirs}",
        "num.partitions=1",
        "auto.create.topics.enable=false",
        f"offsets.topic.replication.factor={rf}",
        "offsets.topic.num.partitions=10",
        f"transaction.state.log.replication.factor={rf}",
        f"transaction.state.log.min.isr={isr}",
        f"share.coordinator.state.topic.replication.factor={rf}",
        f"share.coordinator.state.topic.min.isr={isr}",
        f"default.replication.factor={rf}",
        f"min.insync.replicas={isr}",
        "group.initial.rebalance.delay.ms=0",
        "log.retention.hours=168",
        # the default for topics without an override: the largest topic's own limit, the DLQ's
        # (shared.kafka.DLQ_MAX_MESSAGE_BYTES = MAX_MESSAGE_BYTES + 64 KiB)
        "message.max.bytes=8454144",
        "",
    ])
