"""`python -m deploy.devstack run|kafka|postgres|setup`: the local stack's launcher.

Failures the user can fix print one line (no stack trace) and exit 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from deploy.devstack.child import ChildServer
from deploy.devstack.errors import LauncherError
from deploy.devstack.paths import state_dir


def _serve_forever(server: ChildServer) -> int:
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(0.5):
        code = None if server.process is None else server.process.poll()
        if code is not None:
            return code
    server.stop()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deploy.devstack")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run", help="run the whole stack under supervisord (make run)")
    sub.add_parser("setup", help="fetch the Kafka jars and check Java and PostgreSQL")
    k = sub.add_parser("kafka", help="run only the Kafka broker, in the foreground")
    k.add_argument("--port", type=int, default=int(os.environ.get("KAFKA_PORT", 9092)))
    k.add_argument("--controller-port", type=int,
                   default=int(os.environ.get("KAFKA_CONTROLLER_PORT", 9093)))
    k.add_argument("--data-dir", type=Path, default=None)
    p = sub.add_parser("postgres", help="run only PostgreSQL, in the foreground")
    p.add_argument("--port", type=int, default=int(os.environ.get("POSTGRES_PORT", 5432)))
    p.add_argument("--data-dir", type=Path, default=None)
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "run":
            from deploy.devstack.stack import run

            return run()
        if args.cmd == "setup":
            from deploy.devstack.kafka import ensure_jars, java_binary
            from deploy.devstack.postgres import postgres_bindir

            java_binary()
            print(f"kafka jars: {ensure_jars()}\npostgresql: {postgres_bindir()}")
            return 0
        if args.cmd == "kafka":
            from deploy.devstack.kafka import KafkaBroker

            broker = KafkaBroker(args.port, args.controller_port, args.data_dir or state_dir() / "kafka")
            broker.start()
            broker.wait_ready()
            print(f"kafka ready on {broker.bootstrap}", flush=True)
            return _serve_forever(broker)
        from deploy.devstack.postgres import PostgresServer

        pg = PostgresServer(args.port, args.data_dir or state_dir() / "postgres")
        pg.start()
        pg.wait_ready()
        print(f"postgres ready: {pg.url}", flush=True)
        return _serve_forever(pg)
    except LauncherError as exc:
        print(f"imagejobs: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
