"""KAFKA_SECURITY_PROTOCOL and KAFKA_SASL_*: the one set of connection arguments every Kafka
client is made with, the faust equivalent, and the ACLs of the locked-down compose (issue 22)."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from deploy.kafka_init import DOWNSTREAM, Acl, Op, Pattern, Resource, acl_plan
from services.storestats.app import broker_credentials
from services.storestats.settings import StoreStatsSettings
from shared.kafka import consumer_options, kafka_security, make_producer
from shared.runtime import Runtime
from shared.settings import CommonSettings

SASL = {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "processor",
        "kafka_sasl_password": "s3cret-value"}


def test_plaintext_by_default() -> None:
    assert kafka_security(CommonSettings()) == {"security_protocol": "PLAINTEXT"}


def test_sasl_scram_sha_512_by_default() -> None:
    assert kafka_security(CommonSettings(**SASL)) == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "processor", "sasl_plain_password": "s3cret-value"}


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"KAFKA_SECURITY_PROTOCOL": "sasl_plaintext", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
                        "KAFKA_SASL_USERNAME": "ingest", "KAFKA_SASL_PASSWORD": "pw"}.items():
        monkeypatch.setenv(name, value)
    options = kafka_security(CommonSettings())
    assert (options["security_protocol"], options["sasl_mechanism"], options["sasl_plain_username"],
            options["sasl_plain_password"]) == ("SASL_PLAINTEXT", "SCRAM-SHA-256", "ingest", "pw")


def test_the_password_is_never_shown() -> None:
    settings = CommonSettings(**SASL)
    assert "s3cret-value" not in repr(settings) and "s3cret-value" not in str(settings.model_dump())


@pytest.mark.parametrize(("settings", "message"), [
    ({"kafka_security_protocol": "SASL_PLAINTEXT"}, "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
    ({**SASL, "kafka_sasl_password": ""}, "SASL_PLAINTEXT needs KAFKA_SASL_PASSWORD"),
    ({**SASL, "kafka_sasl_username": ""}, "SASL_PLAINTEXT needs KAFKA_SASL_USERNAME"),
    ({"kafka_security_protocol": "TLS"}, "KAFKA_SECURITY_PROTOCOL='TLS' is not one of"),
    ({**SASL, "kafka_sasl_mechanism": "GSSAPI"}, "KAFKA_SASL_MECHANISM='GSSAPI' is not one of"),
])
def test_a_setting_that_cannot_work_is_one_clear_error(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        kafka_security(CommonSettings(**settings))
    assert "s3cret-value" not in str(raised.value)


def test_ssl_protocols_carry_a_context() -> None:
    options = kafka_security(CommonSettings(**{**SASL, "kafka_security_protocol": "SASL_SSL"}))
    assert isinstance(options["ssl_context"], ssl.SSLContext) and options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert isinstance(kafka_security(CommonSettings(kafka_security_protocol="SSL"))["ssl_context"], ssl.SSLContext)


async def test_every_client_is_made_with_them() -> None:
    settings = CommonSettings(**SASL)
    producer = make_producer(settings, "processor")
    consumer = AIOKafkaConsumer(**consumer_options(settings, "processor"))
    admin = AIOKafkaAdminClient(bootstrap_servers="127.0.0.1:1", **kafka_security(settings))
    clients: list[Any] = [producer.client, consumer._client, admin._client]  # noqa: SLF001
    for client in clients:
        assert (client._security_protocol, client._sasl_mechanism, client._sasl_plain_username,  # noqa: SLF001
                client._sasl_plain_password) == ("SASL_PLAINTEXT", "SCRAM-SHA-512", "processor", "s3cret-value")
    assert isinstance(producer, AIOKafkaProducer)


def test_faust_gets_the_same_credentials() -> None:
    assert broker_credentials(StoreStatsSettings()) is None
    credentials = broker_credentials(StoreStatsSettings(**{**SASL, "kafka_sasl_username": "storestats"}))
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password, credentials.mechanism.value, credentials.protocol.value) == (
        "storestats", "s3cret-value", "SCRAM-SHA-512", "SASL_PLAINTEXT")
    with pytest.raises(ValueError, match="needs KAFKA_SASL_PASSWORD"):
        broker_credentials(StoreStatsSettings(**{**SASL, "kafka_sasl_password": ""}))


def grants(plan: list[Acl], user: str, op: Op, resource: Resource = Resource.TOPIC) -> set[str]:
    return {a.name + ("*" if a.pattern == Pattern.PREFIXED else "") for a in plan
            if a.user == user and a.resource == resource and a.op in (op, Op.ALL)}


def test_each_service_reads_and_writes_only_its_own_topics() -> None:
    plan = acl_plan(CommonSettings())
    assert {u: grants(plan, u, Op.WRITE) for u in ("ingest", "scheduler", "processor", "status", "storestats")} == {
        "ingest": {"imagejobs.jobs"},
        "scheduler": {"imagejobs.jobs", "imagejobs.tasks", "imagejobs.results", "imagejobs.dlq"},
        "processor": {"imagejobs.results", "imagejobs.dlq"},
        "status": {"imagejobs.jobs", "imagejobs.status", "imagejobs.dlq"},
        "storestats": {"imagejobs.store-stats", "imagejobs.dlq", "imagejobs.storestats-*"}}
    assert {u: grants(plan, u, Op.READ) for u in ("ingest", "scheduler", "processor", "status", "storestats")} == {
        "ingest": set(), "scheduler": {"imagejobs.jobs"}, "processor": {"imagejobs.tasks"},
        "status": {"imagejobs.jobs", "imagejobs.results"},
        "storestats": {"imagejobs.results", "imagejobs.storestats-*"}}
    assert grants(plan, "processor", Op.READ, Resource.GROUP) == {"imagejobs.processor"}
    assert grants(plan, "ingest", Op.READ, Resource.GROUP) == set()
    # the scheduler's dispatch window asks for the processors' committed offsets, nothing more
    assert grants(plan, "scheduler", Op.DESCRIBE, Resource.GROUP) == {"imagejobs.processor"}
    assert grants(plan, "scheduler", Op.READ, Resource.GROUP) == {"imagejobs.scheduler"}
    assert not [a for a in plan if a.op == Op.CREATE and a.user != "storestats"]


def test_downstream_may_only_read_results_status_and_store_statistics() -> None:
    plan = [a for a in acl_plan(CommonSettings(kafka_topic_prefix="acme")) if a.user == DOWNSTREAM]
    assert {(a.resource, a.name, a.op, a.pattern) for a in plan} == {
        (Resource.TOPIC, "acme.results", Op.READ, Pattern.LITERAL),
        (Resource.TOPIC, "acme.status", Op.READ, Pattern.LITERAL),
        (Resource.TOPIC, "acme.store-stats", Op.READ, Pattern.LITERAL),
        (Resource.GROUP, "acme.downstream", Op.READ, Pattern.PREFIXED)}


@pytest.mark.parametrize("service", ["services.ingest", "services.storestats"])
def test_sasl_without_credentials_stops_a_service_at_start_with_one_line(service: str) -> None:
    env = {**os.environ, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "ingest",
           "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
           "INGEST_PORT": "0", "STORESTATS_PORT": "0", "LOG_JSON": "false"}
    env.pop("KAFKA_SASL_PASSWORD", None)
    done = subprocess.run([sys.executable, "-m", service], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "cannot start: KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT needs KAFKA_SASL_PASSWORD" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_a_runtime_is_not_built_without_them() -> None:
    with pytest.raises(ValueError, match="needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"):
        Runtime(CommonSettings(kafka_security_protocol="SASL_PLAINTEXT"), "ingest")
