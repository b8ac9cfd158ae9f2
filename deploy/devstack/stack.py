"""`make run`: Kafka, PostgreSQL, the services and the sample image server under supervisord.

supervisord (`-n`, in the foreground) restarts any process that exits (as compose's
`restart: unless-stopped`), and on Ctrl-C stops them in reverse priority order: services
first, then Kafka and PostgreSQL, SIGKILL after a grace period. This module only checks the
machine, prepares data dirs, writes the supervisord config and waits for readiness.
"""

from __future__ import annotations

import base64
import configparser
import io
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from deploy.devstack.errors import LauncherError
from deploy.devstack.kafka import KafkaBroker, ensure_jars, java_binary
from deploy.devstack.net import require_free_port
from deploy.devstack.paths import PROJECT_ROOT, state_dir
from deploy.devstack.postgres import PostgresServer, postgres_bindir, server_user
from deploy.healthcheck import ready


@dataclass
class Program:
    name: str
    command: list[str]
    priority: int
    env: dict[str, str]
    user: str | None = None
    stop_signal: str = "TERM"


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def stack_defaults(kafka: KafkaBroker | None, pg: PostgresServer | None) -> dict[str, str]:
    """The stack's own defaults; a variable already in the caller's environment wins."""
    defaults = {
        "IMAGE_ALLOW_PRIVATE_NETWORKS": "true",  # the sample image server is on loopback
        "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",  # and so are the webhook receivers one tries it with
        "PYTHONUNBUFFERED": "1",
        "STORESTATS_DATA_DIR": str(state_dir() / "storestats"),
    }
    if kafka:
        defaults["KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap
    if pg:
        defaults["DATABASE_URL"] = pg.url
    return {k: v for k, v in defaults.items() if k not in os.environ}


def webhook_secret() -> str:
    """The local stack's WEBHOOK_SECRET, so `make run` has webhooks on: made once and kept in
    the state dir (readable by its owner only), so a receiver set up with it keeps verifying
    across restarts. A WEBHOOK_SECRET in the environment wins (empty: webhooks off)."""
    path = state_dir() / "webhook-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write("whsec_" + base64.b64encode(os.urandom(32)).decode() + "\n")
    return path.read_text().strip()


def programs(kafka: KafkaBroker | None, pg: PostgresServer | None) -> list[Program]:
    env = stack_defaults(kafka, pg)
    # only the services that accept (ingest) and sign (status) webhooks hold the secret
    signing = {**env, "WEBHOOK_SECRET": webhook_secret()} if "WEBHOOK_SECRET" not in os.environ else env
    py = sys.executable
    progs: list[Program] = []
    if kafka:
        progs.append(Program("kafka", kafka.command(), 10, {}))
    if pg:
        progs.append(Program("postgres", pg.command(), 10, {}, user=server_user(), stop_signal="INT"))
    progs += [
        Program("ingest", [py, "-m", "services.ingest"], 20, signing),
        Program("scheduler", [py, "-m", "services.scheduler"], 20, env),
        Program("status", [py, "-m", "services.status"], 20, signing),
        Program("images", [py, "-m", "deploy.devstack.sample_images"], 20, env),
        Program("storestats", [py, "-m", "services.storestats"], 30, env),
    ]
    base = _env_int("PROCESSOR_PORT", 8003)
    for i in range(_env_int("PROCESSOR_INSTANCES", 2)):
        progs.append(Program(f"processor-{i + 1}", [py, "-m", "services.processor"], 20,
                             {**env, "PROCESSOR_PORT": str(base + i)}))
    return progs


def supervisord_config(progs: list[Program], run_dir: Path) -> str:
    """The supervisord INI, written with configparser (values keep supervisord's own `%%`
    escaping; configparser's interpolation is off)."""
    config = configparser.ConfigParser(interpolation=None)
    config["supervisord"] = {"nodaemon": "true", "logfile": "/dev/null", "logfile_maxbytes": "0",
                             "pidfile": f"{run_dir}/supervisord.pid", "loglevel": "warn", "user": _whoami()}
    config["unix_http_server"] = {"file": f"{run_dir}/supervisor.sock"}
    config["rpcinterface:supervisor"] = {
        "supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface"}
    config["supervisorctl"] = {"serverurl": f"unix://{run_dir}/supervisor.sock"}
    for p in progs:
        config[f"program:{p.name}"] = _program_section(p)
    out = io.StringIO()
    config.write(out)
    return out.getvalue()


def _program_section(p: Program) -> dict[str, str]:
    as_user = ["--user", p.user] if p.user else []
    wrapped = [sys.executable, "-m", "deploy.devstack.prefix", p.name, *as_user, "--", *p.command]
    section = {
        "command": " ".join(_quote(a) for a in wrapped), "directory": str(PROJECT_ROOT),
        "priority": str(p.priority), "autostart": "true", "autorestart": "true", "startsecs": "1",
        "startretries": "1000000", "stopsignal": p.stop_signal, "stopwaitsecs": "50", "killasgroup": "true",
        "redirect_stderr": "true", "stdout_logfile": "/dev/fd/1", "stdout_logfile_maxbytes": "0",
    }
    if p.env:
        section["environment"] = ",".join(f'{k}="{_esc(v)}"' for k, v in p.env.items())
    return section


def _whoami() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _quote(arg: str) -> str:
    arg = arg.replace("%", "%%")
    return f'"{arg}"' if any(c in arg for c in " \t'") else arg


def _esc(value: str) -> str:
    return value.replace("%", "%%").replace('"', '\\"')


def check_ports(kafka: KafkaBroker | None, pg: PostgresServer | None) -> None:
    if kafka:
        require_free_port(kafka.port, "Kafka", "KAFKA_PORT")
        require_free_port(kafka.controller_port, "Kafka's controller", "KAFKA_CONTROLLER_PORT")
    if pg:
        require_free_port(pg.port, "PostgreSQL", "POSTGRES_PORT")
    for name, setting, default in [("ingest", "INGEST_PORT", 8000), ("status", "STATUS_PORT", 8001),
                                   ("scheduler", "SCHEDULER_PORT", 8002), ("storestats", "STORESTATS_PORT", 8009),
                                   ("the sample image server", "SAMPLE_IMAGES_PORT", 8090)]:
        require_free_port(_env_int(setting, default), name, setting)
    base = _env_int("PROCESSOR_PORT", 8003)
    for i in range(_env_int("PROCESSOR_INSTANCES", 2)):
        require_free_port(base + i, f"processor {i + 1}", "PROCESSOR_PORT")


def run() -> int:
    """Start everything, wait until Kafka and PostgreSQL answer, then run until Ctrl-C."""
    state = state_dir()
    kafka = pg = None
    if "KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
        java_binary()
        ensure_jars()
        kafka = KafkaBroker(_env_int("KAFKA_PORT", 9092), _env_int("KAFKA_CONTROLLER_PORT", 9093),
                            state / "kafka", jvm_opts=os.environ.get("KAFKA_JVM_OPTS", ""))
    if "DATABASE_URL" not in os.environ:
        postgres_bindir()
        pg = PostgresServer(_env_int("POSTGRES_PORT", 5432), state / "postgres")
    check_ports(kafka, pg)
    if kafka:
        kafka.prepare()
    if pg:
        pg.prepare()
    return _supervise(kafka, pg, state / "run")


def _supervise(kafka: KafkaBroker | None, pg: PostgresServer | None, run_dir: Path) -> int:
    """supervisord in the foreground over every program; Ctrl-C (or SIGTERM) stops them all."""
    run_dir.mkdir(parents=True, exist_ok=True)
    conf = run_dir / "supervisord.conf"
    conf.write_text(supervisord_config(programs(kafka, pg), run_dir))
    supervisor = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(conf)])

    def stop(*_: object) -> None:
        supervisor.send_signal(signal.SIGTERM)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        _wait_for_infra(kafka, pg)
        return supervisor.wait()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # supervisord is already stopping everything
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        supervisor.wait()
        return 0
    except LauncherError:
        supervisor.terminate()
        supervisor.wait()
        raise


def _wait_for_infra(kafka: KafkaBroker | None, pg: PostgresServer | None) -> None:
    """PostgreSQL, the store master import, Kafka, then every service ready: "up" means a
    job submitted now runs correctly (the processors report ready only with the store master)."""
    started = time.monotonic()
    if pg:
        pg.wait_ready(deadline_s=60)
    _import_store_master(pg)
    if kafka:
        kafka.log_path = state_dir() / "kafka" / "broker.log"  # (supervisord writes to the terminal)
        kafka.wait_ready(deadline_s=90)
    ingest = _env_int("INGEST_PORT", 8000)
    status = _env_int("STATUS_PORT", 8001)
    processors = [_env_int("PROCESSOR_PORT", 8003) + i for i in range(_env_int("PROCESSOR_INSTANCES", 2))]
    stats = _env_int("STORESTATS_PORT", 8009)  # the downstream store statistics: up means everything
    for port in (ingest, status, _env_int("SCHEDULER_PORT", 8002), *processors, stats):
        if not _wait_ready(port, 90):
            raise LauncherError(f"the service on port {port} did not become ready in 90s; see its log lines above")
    print(f"\n  imagejobs is up in {time.monotonic() - started:.1f}s: ingest http://127.0.0.1:{ingest}"
          f"  status http://127.0.0.1:{status}/docs  (Ctrl-C stops everything)\n", flush=True)


def _wait_ready(port: int, deadline_s: float) -> bool:
    """True once http://127.0.0.1:port/readyz answers 200 (Kafka and PostgreSQL connected)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if ready(port):
            return True
        time.sleep(0.2)
    return False


def _import_store_master(pg: PostgresServer | None) -> None:
    """Load the sample store master (idempotent) into the stack's database (the one on
    POSTGRES_PORT, or DATABASE_URL's), retrying while the server finishes starting."""
    sample = PROJECT_ROOT / "data" / "StoreMasterAssignment.csv"
    if not sample.exists():
        return
    env = {**os.environ, **stack_defaults(None, pg)}
    for _ in range(30):
        done = subprocess.run([sys.executable, "-m", "deploy.stores", "import", str(sample)], env=env, check=False)
        if done.returncode == 0:
            return
        time.sleep(1)
    raise LauncherError("the store master import kept failing; see its messages above")
