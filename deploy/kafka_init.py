"""`python -m deploy.kafka_init`: a secured cluster's set-up, run as its admin user (a super user)
before the services start (docker-compose.yml's `kafka-init`): the core topics, then one set of
ACLs per service user, so that each reads and writes only its own topics and consumer groups.

Idempotent: an existing topic is left as it is (its configs brought up to date, as every service
does), and Kafka keeps one copy of an ACL created twice. It never deletes an ACL.

The users (SCRAM credentials) are the broker's (deploy/docker/kafka-entrypoint.sh); the names
here are the ones the compose file gives the services in KAFKA_SASL_USERNAME. Read and write
access is granted on the exact topic and group names of KAFKA_TOPIC_PREFIX (literal ACLs);
the only prefixed ones are faust's own topics (`<prefix>.storestats-…`) and the downstream
consumers' groups (`<prefix>.downstream…`). Every service user may also *describe* the core
topics (their metadata and configs: each service checks at start that they exist as specified),
which lets it neither read nor write them.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass
from enum import IntEnum

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.admin import CreateAclsRequest

from shared.kafka import admin_client, ensure_topics, kafka_security
from shared.logging import configure_logging
from shared.runtime import retry_forever
from shared.settings import CommonSettings

log = logging.getLogger("deploy.kafka_init")


class Resource(IntEnum):  # Kafka's ResourceType codes
    TOPIC = 2
    GROUP = 3


class Pattern(IntEnum):  # Kafka's PatternType codes
    LITERAL = 3
    PREFIXED = 4


class Op(IntEnum):  # Kafka's AclOperation codes
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11


ALLOW = 3  # Kafka's AclPermissionType
SERVICES = ("ingest", "scheduler", "processor", "status", "storestats")
DOWNSTREAM = "downstream"


@dataclass(frozen=True, order=True)
class Acl:
    user: str
    resource: Resource
    name: str
    op: Op
    pattern: Pattern = Pattern.LITERAL

    def __str__(self) -> str:
        star = "*" if self.pattern == Pattern.PREFIXED else ""
        return f"User:{self.user} {self.op.name} {self.resource.name.lower()} {self.name}{star}"


def acl_plan(settings: CommonSettings) -> list[Acl]:
    """Every ACL of every service user and of `downstream`, for the settings' topic prefix."""
    t, prefix = settings.topics, settings.kafka_topic_prefix
    stats_topic = f"{prefix}.store-stats"
    core = [t.jobs, t.tasks, t.results, t.status, t.dlq]
    reads = {"scheduler": [t.jobs], "processor": [t.tasks], "status": [t.jobs, t.results],
             "storestats": [t.results]}
    writes = {"ingest": [t.jobs], "scheduler": [t.jobs, t.tasks, t.results, t.dlq],
              "processor": [t.results, t.dlq], "status": [t.jobs, t.status, t.dlq],
              "storestats": [stats_topic, t.dlq]}
    plan: list[Acl] = []
    for user in SERVICES:
        plan += [Acl(user, Resource.TOPIC, topic, op) for topic in core
                 for op in (Op.DESCRIBE, Op.DESCRIBE_CONFIGS)]
        plan += [Acl(user, Resource.TOPIC, topic, Op.READ) for topic in reads.get(user, [])]
        plan += [Acl(user, Resource.TOPIC, topic, Op.WRITE) for topic in writes.get(user, [])]
        if user in reads:  # a consumer group of its own: <prefix>.<service>
            plan.append(Acl(user, Resource.GROUP, settings.consumer_group(user), Op.READ))
    # the scheduler's dispatch window reads the processors' committed offsets (OffsetFetch)
    plan.append(Acl("scheduler", Resource.GROUP, settings.consumer_group("processor"), Op.DESCRIBE))
    # the store statistics make their own output topic, and faust its own (`<app id>-…`)
    plan += [Acl("storestats", Resource.TOPIC, stats_topic, op)
             for op in (Op.CREATE, Op.DESCRIBE, Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS)]
    plan.append(Acl("storestats", Resource.TOPIC, settings.consumer_group("storestats") + "-", Op.ALL,
                    Pattern.PREFIXED))
    # downstream teams: read the outcomes, the statuses and the store statistics, in their groups
    plan += [Acl(DOWNSTREAM, Resource.TOPIC, topic, Op.READ) for topic in (t.results, t.status, stats_topic)]
    plan.append(Acl(DOWNSTREAM, Resource.GROUP, settings.consumer_group(DOWNSTREAM), Op.READ, Pattern.PREFIXED))
    return sorted(set(plan))


async def create_acls(admin: AIOKafkaAdminClient, acls: list[Acl]) -> None:
    """Create each ACL (one CreateAcls request each: aiokafka builds one creation per request);
    an error code raises the matching KafkaError naming the ACL."""
    for acl in acls:
        request = CreateAclsRequest(int(acl.resource), acl.name, int(acl.pattern), f"User:{acl.user}", "*",
                                    int(acl.op), ALLOW)
        response = await admin._send_request(request)  # noqa: SLF001 - aiokafka has no create_acls
        for error_code, message in response.creation_responses:
            if error_code:
                raise for_code(error_code)(f"creating the ACL {acl}: {message}")


async def initialise(settings: CommonSettings) -> list[Acl]:
    await retry_forever("creating Kafka topics", lambda: ensure_topics(settings))
    plan = acl_plan(settings)

    async def create() -> None:
        async with admin_client(settings) as admin:
            await create_acls(admin, plan)

    await retry_forever("creating Kafka ACLs", create)
    return plan


def main() -> None:
    settings = CommonSettings()
    configure_logging(settings.log_level, settings.log_json)
    try:
        kafka_security(settings)
    except ValueError as exc:
        log.critical("cannot start: %s", exc)
        sys.exit(2)
    plan = asyncio.run(asyncio.wait_for(initialise(settings), 300))
    log.info("Kafka topics and %d ACLs in place for %s and %s", len(plan), ", ".join(SERVICES), DOWNSTREAM)


if __name__ == "__main__":
    main()
