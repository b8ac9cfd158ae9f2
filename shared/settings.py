"""Settings shared by every service, read from environment variables (the README's settings table lists them).

Each service composes these with its own fields; settings are built once in `__main__`
and passed down, never read from `os.environ` deep inside.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """Kafka, PostgreSQL and logging settings every service needs."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # How every Kafka client of the service authenticates (shared/kafka.py `kafka_security`):
    # PLAINTEXT (the local stack, on loopback), SASL_PLAINTEXT, SASL_SSL or SSL. With SASL the
    # username and password are required (the service stops at start without them); the
    # password is a SecretStr, never logged. KAFKA_SSL_CAFILE: the authority of the brokers'
    # certificates (empty: the system's).
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    kafka_ssl_cafile: str = ""
    kafka_topic_prefix: str = "imagejobs"
    kafka_replication_factor: int = 1
    kafka_tasks_partitions: int = 12
    kafka_partitions: int = 6
    # How long a producer waits to fill a batch. Under load batches fill while the previous
    # request is in flight anyway (one in flight per broker), so this only adds latency when idle.
    kafka_linger_ms: int = 1
    # A consumer's fetch waits for this many bytes or this long, whichever comes first
    kafka_fetch_min_bytes: int = 1
    kafka_fetch_max_wait_ms: int = 500
    # While a stream is busy (shared/pacing.py), consumers' fetches and the processor's result
    # recorder wait up to this long to gather larger rounds; a quiet stream never waits. 0: off.
    busy_batch_wait_ms: int = 20
    database_url: str = "postgresql://imagejobs@127.0.0.1:5432/imagejobs"
    database_pool_max: int = 10
    default_timezone: str = "Asia/Kolkata"
    log_level: str = "INFO"
    log_json: bool = False
    http_host: str = "127.0.0.1"
    # Front door hygiene (every HTTP server: shared/serve.py): connections per process (a new
    # one past the cap gets a fast 503), the size of a request line plus headers (431 past it),
    # deadlines for the headers and for the body (408 past them), and how long a response may
    # wait for a client that has stopped reading it (then the connection is cut).
    http_max_connections: int = 4096  # the status service holds a connection per progress stream
    http_max_header_bytes: int = 32 * 1024
    http_header_timeout_s: float = 10.0
    http_body_timeout_s: float = 30.0
    http_send_timeout_s: float = Field(30.0, gt=0)
    # A consumer with lag that makes no progress for this long is not ready (/readyz names it).
    stall_s: float = 60.0
    # A consumer that has waited this long for its group to assign it partitions (a join that
    # never completes) is replaced by a new one; a rebalance normally takes seconds, at most the
    # slowest member's revoke (bounded by max.poll.interval, 300 s, in theory).
    consumer_rejoin_deadline_s: float = 120.0
    # Shares of the processors between tenants with work, `tenant=weight,...`; unlisted: 1.
    tenant_weights: str = ""
    # Retention (shared/retention.py): a job is forgotten this long after its final status; each
    # service's maintenance loop looks this often and deletes at most this many rows per
    # transaction. Scheduler and processor rows are kept the slack longer (a released job's
    # images are final long before its job is), so nothing the view still shows loses its source.
    job_retention_s: float = Field(30 * 86_400, gt=0)
    retention_every_s: float = Field(60.0, gt=0)
    retention_batch: int = Field(500, gt=0)
    retention_slack_s: float = Field(86_400, ge=0)
    # Kafka's own retention, per topic (shared/kafka.py): the core topics keep the broker's default
    # (7 days) unless this is set; dead letters are kept longer, to be read and replayed.
    kafka_topic_retention_s: float | None = Field(None, gt=0)
    dlq_retention_s: float = Field(30 * 86_400, gt=0)

    @property
    def topics(self) -> Topics:
        return Topics(self.kafka_topic_prefix)

    def consumer_group(self, service: str) -> str:
        """`<prefix>.<service>`: deployments sharing a cluster never share a consumer group
        (a shared group rebalances all of them together, so one's crash stalls the others)."""
        return f"{self.kafka_topic_prefix}.{service}"


class Topics:
    """Topic names under one prefix (tests use a unique prefix per stack)."""

    def __init__(self, prefix: str) -> None:
        self.jobs = f"{prefix}.jobs"
        self.tasks = f"{prefix}.tasks"
        self.results = f"{prefix}.results"
        self.status = f"{prefix}.status"
        self.dlq = f"{prefix}.dlq"
