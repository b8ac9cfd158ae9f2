"""The broker is real and durable; the launcher fails with one actionable line."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from deploy.devstack.kafka import KafkaBroker
from deploy.devstack.net import free_port
from deploy.devstack.paths import PROJECT_ROOT


async def _produce(bootstrap: str, topic: str, count: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 3, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for i in range(count):
            await producer.send_and_wait(topic, f"record-{i}".encode(), key=str(i).encode())
    finally:
        await producer.stop()


async def _consume_all(bootstrap: str, topic: str, count: int) -> set[str]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    seen: set[str] = set()
    try:
        async with asyncio.timeout(30):
            while len(seen) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    seen.update(r.value.decode() for r in records)
    finally:
        await consumer.stop()
    return seen


def test_records_acknowledged_with_acks_all_survive_a_broker_restart() -> None:
    root = Path(tempfile.mkdtemp(prefix="imagejobs-restart-"))
    broker = KafkaBroker(free_port(), free_port(), root / "kafka", heap="384m")
    broker.data_dir.mkdir(parents=True)
    broker.start()
    try:
        broker.wait_ready()
        asyncio.run(_produce(broker.bootstrap, "durability", 200))
        first_pid = broker.process.pid  # type: ignore[union-attr]
        broker.stop()
        broker.start()
        broker.wait_ready()
        assert broker.process.pid != first_pid  # type: ignore[union-attr]
        seen = asyncio.run(_consume_all(broker.bootstrap, "durability", 200))
        assert seen == {f"record-{i}" for i in range(200)}
    finally:
        if broker.process and broker.process.poll() is None:
            broker.process.kill()
            broker.process.wait()


def _launcher(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deploy.devstack", *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_taken_port_gives_one_actionable_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _launcher(["kafka", "--port", str(port), "--controller-port", str(free_port()),
                            "--data-dir", tempfile.mkdtemp()], dict(os.environ))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {port}" in lines[0] and "already in use" in lines[0] and "KAFKA_PORT" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_java_gives_one_actionable_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = "/nonexistent"
    result = _launcher(["kafka", "--port", str(free_port()), "--controller-port", str(free_port()),
                        "--data-dir", tempfile.mkdtemp()], env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Java 17" in lines[0] and "JAVA_HOME" in lines[0]
    assert "Traceback" not in result.stderr
