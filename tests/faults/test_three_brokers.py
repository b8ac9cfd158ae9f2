"""The pipeline on a three-broker KRaft cluster (three JVMs on loopback, replication factor 3,
`min.insync.replicas=2`), how users run Kafka when one machine is not enough: one broker killed
with -9 under load and brought back, then the leader of the tasks topic's partition 0 killed
the same way. The full invariants hold each time: every job final, one result per image,
nothing before its time, the view equal to the topics' fold."""

from __future__ import annotations

import asyncio
import random
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from deploy.devstack.kafka import KafkaBroker, new_cluster_id
from deploy.devstack.net import free_port
from deploy.devstack.postgres import PostgresServer
from tests.faults.conftest import run_fault_stack
from tests.support.client import Client
from tests.support.invariants import assert_promises_kept, submit_batch
from tests.support.stack import Infra, Stack, discard_data
from tests.support.waiting import wait_for

SIZE = 3


@dataclass
class KafkaCluster:
    brokers: list[KafkaBroker] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers)

    @classmethod
    def start(cls, root: Path) -> KafkaCluster:
        ports = [(free_port(), free_port()) for _ in range(SIZE)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{controller}" for i, (_, controller) in enumerate(ports))
        cluster_id = new_cluster_id()
        cluster = cls([KafkaBroker(port, controller, root / f"kafka{i + 1}", heap="384m", node_id=i + 1,
                                   voters=voters, cluster_id=cluster_id, replication=SIZE)
                       for i, (port, controller) in enumerate(ports)])
        for broker in cluster.brokers:
            broker.data_dir.mkdir(parents=True)
            broker.start()  # all at once: the controllers need a quorum to elect a leader
        for broker in cluster.brokers:
            broker.wait_ready(90)
        return cluster

    def kill_and_restart(self, broker: KafkaBroker, down_s: float = 3.0) -> None:
        """kill -9, stay down `down_s` while the pipeline keeps working, start again."""
        assert broker.process is not None
        broker.process.send_signal(signal.SIGKILL)
        broker.process.wait()
        asyncio.run(asyncio.sleep(down_s))  # the outage itself is the point here
        broker.start()
        broker.wait_ready(90)

    def stop(self) -> None:
        for broker in self.brokers:
            if broker.process and broker.process.poll() is None:
                broker.process.kill()
                broker.process.wait()


@dataclass
class ClusterInfra:
    """Infra's shape (what Stack uses) over the cluster and the session's PostgreSQL."""

    root: Path
    kafka: KafkaCluster
    pg: PostgresServer


@pytest.fixture(scope="module")
def fault_stack(infra: Infra) -> Iterator[tuple[Stack, dict[str, Any]]]:
    root = Path(tempfile.mkdtemp(prefix="imagejobs-cluster-"))
    cluster = KafkaCluster.start(root)
    try:
        yield from run_fault_stack(ClusterInfra(root, cluster, infra.pg),  # type: ignore[arg-type]
                                   extra_env={"KAFKA_REPLICATION_FACTOR": str(SIZE)})
    finally:
        cluster.stop()
        discard_data(*(broker.data_dir for broker in cluster.brokers))


def _leader_of(bootstrap: str, topic: str, partition: int) -> int:
    async def ask() -> int:  # fresh metadata from the cluster, by the admin client's public API
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            [described] = await admin.describe_topics([topic])
            return next(int(p["leader"]) for p in described["partitions"] if p["partition"] == partition)
        finally:
            await admin.close()
    return asyncio.run(ask())


def _results(client: Client) -> int:
    import psycopg

    with psycopg.connect(client.stack.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM processor_results").fetchone()
    return int(row[0]) if row else 0


def _under_load(client: Client, rng: random.Random, fault: Any) -> dict[str, int]:
    start = _results(client)
    batch = submit_batch(client, rng, jobs=30)
    wait_for(lambda: _results(client) > start + 5, 60, "the first results")
    fault()
    report = assert_promises_kept(client, batch, deadline_s=180)
    assert report["lost"] == 0 and report["duplicates"] == 0
    return report


def _describe(bootstrap: str, topic: str) -> tuple[list[dict[str, Any]], str]:
    """The topic's partitions (leader, replicas, isr) and its min.insync.replicas."""
    async def ask() -> tuple[list[dict[str, Any]], str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            [described] = await admin.describe_topics([topic])
            configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            entries = {name: value for name, value, *_ in configs[0].resources[0][4]}
            return described["partitions"], entries["min.insync.replicas"]
        finally:
            await admin.close()
    return asyncio.run(ask())


def test_topics_are_replicated_three_times_with_two_in_sync_required(fault_client: Client) -> None:
    cluster: KafkaCluster = fault_client.stack.infra.kafka  # type: ignore[assignment]
    for name in ("jobs", "tasks", "results"):
        partitions, min_isr = _describe(cluster.bootstrap, f"{fault_client.stack.prefix}.{name}")
        assert min_isr == "2", (name, min_isr)
        assert all(len(p["replicas"]) == SIZE and len(p["isr"]) == SIZE for p in partitions), (name, partitions)
    leaders = {_leader_of(cluster.bootstrap, f"{fault_client.stack.prefix}.tasks", p) for p in range(12)}
    assert leaders <= {1, 2, 3} and len(leaders) > 1, leaders  # leadership is spread over the brokers


def test_one_broker_killed_under_load_loses_nothing(fault_client: Client, rng: random.Random) -> None:
    cluster: KafkaCluster = fault_client.stack.infra.kafka  # type: ignore[assignment]
    victim = cluster.brokers[rng.randrange(SIZE)]
    report = _under_load(fault_client, rng, lambda: cluster.kill_and_restart(victim))
    print(f"\nthree brokers, broker {victim.node_id} killed -9 and restarted: {report}")


def test_the_tasks_partition_leader_killed_under_load_loses_nothing(fault_client: Client,
                                                                     rng: random.Random) -> None:
    cluster: KafkaCluster = fault_client.stack.infra.kafka  # type: ignore[assignment]
    leader = _leader_of(cluster.bootstrap, f"{fault_client.stack.prefix}.tasks", 0)
    report = _under_load(fault_client, rng, lambda: cluster.kill_and_restart(cluster.brokers[leader - 1]))
    print(f"\nthree brokers, tasks partition 0's leader (broker {leader}) killed -9 and restarted: {report}")
