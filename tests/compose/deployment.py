"""One `docker compose` project of this repository's docker-compose.yml, driven through the CLI:
a unique project name (its own containers, network and volumes), published ports picked free on
127.0.0.1, the `demo` profile's sample image server that processors reach as `samples`, and its
own random secrets (passed in the environment, which wins over a developer's `.env`)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from deploy.devstack.net import free_port

ROOT = Path(__file__).resolve().parents[2]
# every `${NAME:?…}` of docker-compose.yml (deploy/docker/prepare.sh writes the same into .env)
SECRETS = ("KAFKA_ADMIN_PASSWORD", "KAFKA_INGEST_PASSWORD", "KAFKA_SCHEDULER_PASSWORD", "KAFKA_PROCESSOR_PASSWORD",
           "KAFKA_STATUS_PASSWORD", "KAFKA_STORESTATS_PASSWORD", "KAFKA_DOWNSTREAM_PASSWORD",
           "POSTGRES_PASSWORD", "POSTGRES_APP_PASSWORD", "GRAFANA_ADMIN_PASSWORD")


@dataclass
class Deployment:
    project: str = field(default_factory=lambda: "imagejobs-test-" + uuid.uuid4().hex[:8])
    ingest_port: int = field(default_factory=free_port)
    status_port: int = field(default_factory=free_port)
    kafka_port: int = field(default_factory=free_port)
    figures: dict[str, object] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=lambda: {name: secrets.token_hex(16) for name in SECRETS})

    @property
    def ingest(self) -> str:
        return f"http://127.0.0.1:{self.ingest_port}"

    @property
    def status(self) -> str:
        return f"http://127.0.0.1:{self.status_port}"

    @property
    def kafka(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def kafka_user(self, user: str) -> dict[str, str]:
        """aiokafka's connection arguments for one of the compose file's Kafka users."""
        return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_plain_username": user, "sasl_plain_password": self.secrets[f"KAFKA_{user.upper()}_PASSWORD"]}

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.secrets, "INGEST_PUBLISHED_PORT": str(self.ingest_port),
                "STATUS_PUBLISHED_PORT": str(self.status_port), "KAFKA_PUBLISHED_PORT": str(self.kafka_port),
                "IMAGE_ALLOW_PRIVATE_NETWORKS": "true", "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
                "PROCESSOR_REPLICAS": "3"}

    def compose(self, *args: str, timeout_s: float = 900) -> str:
        command = ["docker", "compose", "-p", self.project, "--profile", "demo", *args]
        done = subprocess.run(command, cwd=ROOT, env=self.env(), capture_output=True, text=True,
                              timeout=timeout_s, check=False)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done.stdout

    def timed(self, figure: str, *args: str) -> None:
        started = time.monotonic()
        self.compose(*args)
        self.figures[figure] = round(time.monotonic() - started, 1)

    def containers(self, service: str) -> list[str]:
        """Names of the service's running containers."""
        out = self.compose("ps", "--format", "json", service)
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        if len(rows) == 1 and isinstance(rows[0], list):  # older Compose: one JSON array
            rows = rows[0]
        return sorted(row["Name"] for row in rows if row.get("State") == "running")

    def logs_tail(self) -> str:
        try:
            return self.compose("logs", "--no-color", "--tail", "40")
        except AssertionError as failed:
            return str(failed)


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=120).stdout
