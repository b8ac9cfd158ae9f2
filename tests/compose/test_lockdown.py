"""The locked-down compose (issue 22): Kafka refuses a client without credentials on its
published port, each Kafka user writes only its own topics (the processor's cannot write the
jobs topic; `downstream` reads results but writes nothing), the services reach PostgreSQL as an
application role that is no superuser and owns only its schema, and a missing secret stops
`compose up` naming it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile

import pytest
from aiokafka import AIOKafkaClient, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

from tests.compose.deployment import ROOT, Deployment
from tests.compose.test_compose import submit, wait_final
from tests.support.invariants import read_topics


def test_kafka_refuses_a_client_without_credentials(deployment: Deployment) -> None:
    async def connect() -> None:
        client = AIOKafkaClient(bootstrap_servers=deployment.kafka, request_timeout_ms=3000)
        try:
            await client.bootstrap()
        finally:
            await client.close()

    with pytest.raises(KafkaConnectionError):
        asyncio.run(connect())


def produce(deployment: Deployment, user: str, topic: str) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=deployment.kafka, request_timeout_ms=10000,
                                    **deployment.kafka_user(user))  # type: ignore[arg-type]
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"{}", key=b"forged")
        finally:
            await producer.stop()
    asyncio.run(asyncio.wait_for(send(), 60))


def test_the_processors_user_cannot_write_to_the_jobs_topic(deployment: Deployment) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        produce(deployment, "processor", "imagejobs.jobs")


def test_downstream_reads_results_and_writes_nothing(deployment: Deployment) -> None:
    job_id = submit(deployment, json.loads((ROOT / "data" / "compose-example-job.json").read_text()))
    assert wait_final(deployment, job_id)["status"] == "completed"

    async def results() -> list[bytes]:
        return [value async for _, _, value in read_topics(deployment.kafka, ["imagejobs.results"],
                                                             deployment.kafka_user("downstream"))]
    assert [v for v in asyncio.run(asyncio.wait_for(results(), 60)) if job_id.encode() in v]
    with pytest.raises(TopicAuthorizationFailedError):
        produce(deployment, "downstream", "imagejobs.results")


def psql(deployment: Deployment, user: str, password: str, sql: str) -> list[str]:
    out = deployment.compose("exec", "-T", "-e", f"PGPASSWORD={password}", "postgres", "psql", "-X", "-tA",
                             "-h", "127.0.0.1", "-U", user, "-d", "imagejobs", "-c", sql)
    return [line for line in out.splitlines() if line]


def test_the_application_role_is_no_superuser_and_owns_only_its_schema(deployment: Deployment) -> None:
    app = deployment.secrets["POSTGRES_APP_PASSWORD"]
    assert psql(deployment, "imagejobs_app", app, "SELECT current_user, rolsuper, rolcreaterole, rolcreatedb "
                "FROM pg_roles WHERE rolname = current_user") == ["imagejobs_app|f|f|f"]
    superuser = deployment.secrets["POSTGRES_PASSWORD"]
    owners = psql(deployment, "postgres", superuser, "SELECT DISTINCT schemaname || ' ' || tableowner FROM pg_tables "
                  "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")
    assert owners == ["imagejobs imagejobs_app"]
    assert psql(deployment, "postgres", superuser, "SELECT nspowner::regrole FROM pg_namespace "
                "WHERE nspname = 'imagejobs'") == ["imagejobs_app"]
    connected = psql(deployment, "postgres", superuser, "SELECT DISTINCT usename FROM pg_stat_activity "
                     "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
    assert connected == ["imagejobs_app"]  # every service, as the application role


def test_a_missing_secret_stops_compose_up_naming_it(deployment: Deployment) -> None:
    env = {k: v for k, v in deployment.env().items() if k != "KAFKA_PROCESSOR_PASSWORD"}
    project = deployment.project + "-missing"
    with tempfile.NamedTemporaryFile("w", suffix=".env") as empty:  # not the developer's .env
        done = subprocess.run(["docker", "compose", "--env-file", empty.name, "-p", project, "up", "--no-build",
                               "-d"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0
    assert ("required variable KAFKA_PROCESSOR_PASSWORD is missing a value: set KAFKA_PROCESSOR_PASSWORD in .env "
            "(deploy/docker/prepare.sh writes one)") in done.stderr, done.stderr
    listed = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
                            capture_output=True, text=True, check=True, timeout=60)
    assert listed.stdout.strip() == ""  # nothing was started
