"""The peer systems of tests/bench/peers (BullMQ, Celery, the per-image limit), run from `make bench`.

The peers are copied unchanged from the reference (see tests/bench/peers/README.md); this module only starts
them the way the reference's side_by_side.sh does and parses what they print, so the benchmark can put their
figures beside imagejobs' measured in the same run. Set-up: `bash tests/bench/peers_setup.sh` (Redis, the
BullMQ peer's node_modules and the Celery peer's venv under .state/peers). A peer whose prerequisites are
missing is skipped: its method returns None and a note saying why.

Manual check: python -m tests.bench.peers --dsn postgresql://postgres@127.0.0.1:5499/postgres --n 2000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]
PEERS = REPO / "tests" / "bench" / "peers"
STATE = REPO / ".state" / "peers"
BULLMQ_DIR = STATE / "bullmq"  # a copy of PEERS/bullmq with node_modules (made by peers_setup.sh)
VENV = STATE / "venv"
# The BullMQ peer hard-codes Redis at 127.0.0.1:6379 (db 6); the Celery peer reads PEER_BROKER (db 5 by default).
BULLMQ_REDIS_PORT = 6379
BULLMQ_DB = 6
CELERY_DB = 5

PEER_LINE = re.compile(
    r"(?P<peer>\w+) peer \((?P<mode>[^)]*)\): enqueue (?P<n>\d+) in (?P<enqueue_s>[-\d.]+)s; "
    r"\d+ images done (?P<seconds>[-\d.]+)s after due = (?P<images_per_s>[-\w.]+) images/s; "
    r"start lateness p50 (?P<p50>[-\w.]+) ms p99 (?P<p99>[-\w.]+) ms"
)
LIMIT_LINE = re.compile(r"limit: (\d+) images in ([\d.]+)s = ([\d.]+) images/s")

Note = str
PeerResult = tuple[dict[str, Any] | None, Note]


# ----------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        # SO_REUSEADDR as redis-server sets it: a port whose last server left TIME_WAIT connections is free
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    with socket.socket() as s:  # something listening on another address would still answer on loopback
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) != 0


def peers_python() -> str:
    """The peers' venv python, else the project's (which has aiohttp and Pillow)."""
    python = VENV / "bin" / "python"
    return str(python) if python.exists() else sys.executable


def _wait(probe: Callable[[], Any], deadline_s: float, what: str, proc: subprocess.Popen | None = None,
          every_s: float = 0.05) -> Any:
    """Poll `probe` until truthy; fail naming `what` after the deadline or as soon as `proc` has exited."""
    end = time.monotonic() + deadline_s
    while True:
        value = probe()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with code {proc.returncode}")
        if time.monotonic() > end:
            raise RuntimeError(f"timed out after {deadline_s}s waiting for {what}")
        time.sleep(every_s)


def _spawn(argv: list[str], log: IO[bytes] | int, cwd: Path | None = None,
           env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a process in a session (process group) of its own, so that stop() reaches its children too."""
    return subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen | None, grace_s: float = 5.0) -> None:
    """SIGTERM the process's group, SIGKILL it after `grace_s`; never raises."""
    if proc is None:
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; make sure no child of the group outlives it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def redis_command(port: int, *args: str, timeout_s: float = 2.0) -> Any:
    """One Redis command over RESP (no client library needed); returns str/int, raises on an error reply."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(payload.encode())
        f = s.makefile("rb")
        head = f.readline().decode().rstrip("\r\n")
        kind, rest = head[:1], head[1:]
        if kind == "+":
            return rest
        if kind == "-":
            raise RuntimeError(f"redis: {rest}")
        if kind == ":":
            return int(rest)
        if kind == "$":
            size = int(rest)
            return None if size < 0 else f.read(size + 2)[:-2].decode(errors="replace")
        raise RuntimeError(f"redis: unexpected reply {head!r}")


def redis_clients(port: int) -> list[dict[str, str]]:
    """CLIENT LIST as dicts (id, db, cmd, name, ...)."""
    listing = redis_command(port, "CLIENT", "LIST") or ""
    return [dict(field.split("=", 1) for field in line.split() if "=" in field) for line in listing.splitlines()]


def _redis_ping(port: int) -> bool:
    try:
        return redis_command(port, "PING", timeout_s=0.5) == "PONG"
    except (OSError, RuntimeError):
        return False


def _blocked_consumers(port: int, db: int, cmd: str) -> int:
    try:
        return sum(1 for c in redis_clients(port) if c.get("db") == str(db) and c.get("cmd") == cmd)
    except (OSError, RuntimeError):
        return 0


def parse_peer_line(output: str) -> dict[str, Any] | None:
    """The figures of a peer's result line (run.js / run.py), burst or steady; None if there is none.

    Returns {"peer", "mode" ("burst" | "steady R/s"), "rate" (None in a burst), "n", "enqueue_s",
    "seconds" (due time to last result), "images_per_s", "p50_lateness_ms", "p99_lateness_ms"}.
    """
    matches = list(PEER_LINE.finditer(output))
    if not matches:
        return None
    m = matches[-1]
    rate = re.match(r"steady ([\d.]+)/s", m["mode"])
    return {
        "peer": m["peer"],
        "mode": m["mode"],
        "rate": float(rate[1]) if rate else None,
        "n": int(m["n"]),
        "enqueue_s": float(m["enqueue_s"]),
        "seconds": float(m["seconds"]),
        "images_per_s": float(m["images_per_s"]),
        "p50_lateness_ms": float(m["p50"]),
        "p99_lateness_ms": float(m["p99"]),
    }


def parse_fairness_line(output: str) -> dict[str, Any] | None:
    """The figures fairness.js prints as JSON after `bullmq fairness: ` (the last such line); None if none.

    {"backlog", "enqueue_s", "backlog_seconds", "backlog_images_per_s", "late": {"n", "p50_ms", "p99_ms",
    "max_ms"}, "late_ms"}: the late jobs' waits, enqueue to result row, in ms.
    """
    lines = [line for line in output.splitlines() if line.startswith("bullmq fairness: ")]
    return json.loads(lines[-1].removeprefix("bullmq fairness: ")) if lines else None


# ----------------------------------------------------------------------------- image server and limit


def start_image_server(port: int, n: int = 50, deadline_s: float = 120.0) -> subprocess.Popen:
    """Start the peers' loopback image server (tests/bench/peers/imageserver.py) and wait until it serves.

    The caller stops it with stop(proc). Its stdout/stderr go to a temporary file named in any error.
    """
    log = tempfile.NamedTemporaryFile(prefix="peer-imageserver-", suffix=".log", delete=False)
    proc = _spawn([peers_python(), str(PEERS / "imageserver.py"), str(port), str(n)], log)
    log.close()
    url = f"http://127.0.0.1:{port}/img/0.jpg"

    def serves() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200 and len(r.read()) > 0
        except (OSError, urllib.error.URLError):
            return False

    try:
        _wait(serves, deadline_s, f"image server on port {port}", proc, every_s=0.1)
    except RuntimeError as e:
        stop(proc)
        raise RuntimeError(f"{e}; log {log.name}: {_tail(Path(log.name))}") from None
    os.unlink(log.name)  # serving: nothing worth keeping (the server keeps its open descriptor)
    return proc


def run_limit(base_url: str, total: int, concurrency: int = 64, timeout_s: float = 300.0) -> float:
    """Images/s of tests/bench/peers/limit.py (aiohttp fetch + Pillow size, no queue, no database)."""
    out = subprocess.run([peers_python(), str(PEERS / "limit.py"), base_url, str(total), str(concurrency)],
                         capture_output=True, text=True, timeout=timeout_s, start_new_session=True)
    m = LIMIT_LINE.search(out.stdout)
    if out.returncode != 0 or m is None:
        raise RuntimeError(f"limit.py failed (code {out.returncode}): {(out.stdout + out.stderr)[-500:]}")
    return float(m[3])


# ----------------------------------------------------------------------------- BullMQ and Celery


class PeerRunner:
    """Runs the BullMQ and Celery peers against one throwaway redis-server, like side_by_side.sh.

        with PeerRunner(base_url, dsn) as peers:
            bull, note = peers.bullmq(n, lead=10)           # ({...figures...} | None, note)
            cel, note = peers.celery(n, lead=10, rate=200)  # steady stream when rate is given
            fair, note = peers.bullmq_fairness(30000, 20)     # a backlog, then a late job a second

    `dsn` names a PostgreSQL database the caller runs; the peers create (and truncate) their own table
    `peer_results` there. Redis runs on 6379 when that port is free, as the BullMQ peer hard-codes it;
    otherwise on a free port, and the BullMQ peer is skipped (its files are not edited, for fairness).
    Every child runs in a process group of its own and is killed by close(), whatever happened.
    """

    def __init__(self, base_url: str, dsn: str) -> None:
        self.base_url = base_url
        self.dsn = dsn
        self._tmp = tempfile.TemporaryDirectory(prefix="peers-")
        self.dir = Path(self._tmp.name)
        self.redis: subprocess.Popen | None = None
        self.redis_port: int | None = None
        self.redis_note = ""
        self._procs: list[subprocess.Popen] = []
        self._logs: list[IO[bytes]] = []

    def __enter__(self) -> PeerRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- processes

    def _log(self, name: str) -> IO[bytes]:
        log = open(self.dir / f"{name}.log", "wb")  # closed by close()
        self._logs.append(log)
        return log

    def _start(self, name: str, argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
        proc = _spawn(argv, self._log(name), cwd=cwd, env=env)
        self._procs.append(proc)
        return proc

    def _stop(self, procs: list[subprocess.Popen]) -> None:
        for proc in procs:
            stop(proc)
            if proc in self._procs:
                self._procs.remove(proc)

    def close(self) -> None:
        self._stop(list(self._procs))
        if self.redis is not None:
            stop(self.redis)
            self.redis = None
        for log in self._logs:
            log.close()
        self._logs.clear()
        self._tmp.cleanup()

    def _ensure_redis(self) -> int | None:
        """Start redis-server once (6379 if free, else a free port); None (see redis_note) if impossible."""
        if self.redis is not None or self.redis_note:
            return self.redis_port
        exe = shutil.which("redis-server")
        if exe is None:
            self.redis_note = "redis-server missing (run tests/bench/peers_setup.sh)"
            return None
        ports = [BULLMQ_REDIS_PORT] if port_is_free(BULLMQ_REDIS_PORT) else []
        ports.append(free_port())
        for port in ports:
            data = self.dir / f"redis-{port}"
            data.mkdir()
            proc = _spawn([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                           "--dir", str(data)], self._log(f"redis-{port}"))
            try:
                _wait(lambda p=port: _redis_ping(p), 20, f"redis-server on port {port}", proc)
            except RuntimeError as e:
                stop(proc)
                self.redis_note = f"{e}: {_tail(self.dir / f'redis-{port}.log')}"
                continue  # e.g. 6379 taken between the check and the start: try a free port
            self.redis, self.redis_port, self.redis_note = proc, port, ""
            return port
        return None

    def _env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "PEER_DSN": self.dsn, "PYTHONDONTWRITEBYTECODE": "1", **extra}

    def _drive(self, peer: str, argv: list[str], cwd: Path, env: dict[str, str], timeout_s: float,
               parse: Callable[[str], dict[str, Any] | None] = parse_peer_line) -> PeerResult:
        """Run the peer's driver (run.js / run.py / fairness.js) to completion and parse its result line."""
        log_path = self.dir / f"{peer}-run.log"
        with open(log_path, "wb") as log:
            proc = _spawn(argv, log, cwd=cwd, env=env)
            self._procs.append(proc)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                return None, f"{peer}: driver did not finish within {timeout_s:.0f}s: {_tail(log_path)}"
            finally:
                self._stop([proc])
        output = log_path.read_text(errors="replace")
        result = parse(output)
        if proc.returncode != 0 or result is None:
            return None, f"{peer}: driver failed (code {proc.returncode}): {_tail(log_path)}"
        result["line"] = output.strip().splitlines()[-1]
        return result, ""

    @staticmethod
    def _timeout(n: int, lead: float, rate: float | None) -> float:
        return lead + (n / rate if rate else 0) + 60 + n / 100

    def bullmq(self, n: int, lead: float = 10.0, rate: float | None = None, workers: int = 2,
               concurrency: int = 64, timeout_s: float | None = None) -> PeerResult:
        """BullMQ peer: `workers` × `CONCURRENCY=concurrency node worker.js`, then `node run.js BASE N LEAD [RATE]`."""
        argv = ["run.js", self.base_url, str(n), f"{lead:g}"] + ([f"{rate:g}"] if rate else [])
        return self._bullmq_run("bullmq", argv, workers, concurrency, timeout_s or self._timeout(n, lead, rate))

    def bullmq_fairness(self, backlog: int, late: int, lead: float = 10.0, after: float = 3.0, every: float = 1.0,
                        workers: int = 2, concurrency: int = 64, timeout_s: float | None = None) -> PeerResult:
        """BullMQ on imagejobs' fairness scenario (tests/bench/fairness.py): the same workers as bullmq(), then
        `node fairness.js BASE BACKLOG LATE LEAD AFTER EVERY` (tests/bench/peers_fairness): a backlog due at one
        instant, then `late` jobs one every `every` s from `after` s past it. Figures: the backlog's images/s and
        each late job's wait (enqueue -> result row), as parse_fairness_line reads them."""
        if not (BULLMQ_DIR / "fairness.js").is_file():
            return None, f"bullmq fairness skipped: {BULLMQ_DIR}/fairness.js missing (run tests/bench/peers_setup.sh)"
        argv = ["fairness.js", self.base_url, str(backlog), str(late), f"{lead:g}", f"{after:g}", f"{every:g}"]
        timeout = timeout_s or self._timeout(backlog, lead, None) + after + late * every
        return self._bullmq_run("bullmq-fairness", argv, workers, concurrency, timeout, parse_fairness_line)

    def _bullmq_run(self, name: str, script: list[str], workers: int, concurrency: int, timeout_s: float,
                    parse: Callable[[str], dict[str, Any] | None] = parse_peer_line) -> PeerResult:
        """Start `workers` × `CONCURRENCY=concurrency node worker.js`, run `node *script` against them, stop them."""
        node = shutil.which("node")
        if node is None:
            return None, f"{name} skipped: node missing"
        if not (BULLMQ_DIR / "node_modules" / "bullmq").is_dir():
            return None, f"{name} skipped: {BULLMQ_DIR}/node_modules missing (run tests/bench/peers_setup.sh)"
        port = self._ensure_redis()
        if port is None:
            return None, f"{name} skipped: {self.redis_note}"
        if port != BULLMQ_REDIS_PORT:
            return None, (f"{name} skipped: port {BULLMQ_REDIS_PORT} is in use and the peer hard-codes "
                          f"127.0.0.1:{BULLMQ_REDIS_PORT} (its files are kept unchanged)")
        env = self._env(CONCURRENCY=str(concurrency))
        procs = [self._start(f"bullmq-worker{i}", [node, "worker.js"], BULLMQ_DIR, env) for i in range(workers)]
        try:
            # Ready when every worker blocks on its marker (BullMQ's blocking connection runs BZPOPMIN).
            _wait(lambda: _blocked_consumers(port, BULLMQ_DB, "bzpopmin") >= workers
                  or any(p.poll() is not None for p in procs), 60, "BullMQ workers")
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                return None, f"{name}: a worker exited: {_tail(self.dir / 'bullmq-worker0.log')}"
            return self._drive(name, [node, *script], BULLMQ_DIR, env, timeout_s, parse)
        except RuntimeError as e:
            return None, f"{name}: {e}"
        finally:
            self._stop(procs)

    def celery(self, n: int, lead: float = 10.0, rate: float | None = None, processes: int = 4,
               timeout_s: float | None = None) -> PeerResult:
        """Celery peer: `celery -A tasks worker -P prefork -c processes`, then `python run.py BASE N LEAD [RATE]`."""
        celery = VENV / "bin" / "celery"
        if not celery.exists():
            return None, f"celery skipped: {celery} missing (run tests/bench/peers_setup.sh)"
        port = self._ensure_redis()
        if port is None:
            return None, f"celery skipped: {self.redis_note}"
        cwd = PEERS / "celery"
        env = self._env(PEER_BROKER=f"redis://127.0.0.1:{port}/{CELERY_DB}")
        worker = self._start("celery-worker", [str(celery), "-A", "tasks", "worker", "-P", "prefork", "-c",
                                               str(processes), "--loglevel=WARNING"], cwd, env)
        try:
            # Ready when the consumer blocks on the task queue (kombu's Redis transport runs BRPOP); the prefork
            # pool is started before the consumer.
            _wait(lambda: _blocked_consumers(port, CELERY_DB, "brpop") >= 1, 60, "Celery worker", worker)
            argv = [str(VENV / "bin" / "python"), "run.py", self.base_url, str(n), f"{lead:g}"]
            argv += [f"{rate:g}"] if rate else []
            return self._drive("celery", argv, cwd, env, timeout_s or self._timeout(n, lead, rate))
        except RuntimeError as e:
            return None, f"celery: {e}: {_tail(self.dir / 'celery-worker.log')}"
        finally:
            self._stop([worker])


# ----------------------------------------------------------------------------- manual check


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", default=os.environ.get("PEER_DSN"), help="PostgreSQL DSN for peer_results "
                    "(default $PEER_DSN)")
    ap.add_argument("--n", type=int, default=2000, help="images per peer run")
    ap.add_argument("--lead", type=float, default=10.0, help="seconds from enqueue start to the due time")
    ap.add_argument("--rate", type=float, default=None, help="steady stream of RATE images/s (default: burst)")
    ap.add_argument("--limit-total", type=int, default=None, help="images for limit.py (default --n)")
    ap.add_argument("--limit-concurrency", type=int, default=64)
    ap.add_argument("--images", type=int, default=50, help="distinct images the server generates")
    ap.add_argument("--only", default="limit,bullmq,celery", help="comma-separated subset to run")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    if args.dsn is None and only - {"limit"}:
        ap.error("--dsn (or PEER_DSN) is needed for the BullMQ and Celery peers")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_image_server(port, args.images)
    try:
        if "limit" in only:
            total = args.limit_total or args.n
            print(f"limit:  {run_limit(base, total, args.limit_concurrency):,.0f} images/s "
                  f"({total} images, concurrency {args.limit_concurrency})")
        with PeerRunner(base, args.dsn or "") as peers:
            for name in ("bullmq", "celery"):
                if name not in only:
                    continue
                result, note = getattr(peers, name)(args.n, lead=args.lead, rate=args.rate)
                if result is None:
                    print(f"{name}: {note}")
                else:
                    print(f"{name}: {result['images_per_s']:,.0f} images/s ({result['mode']}, {result['n']} images "
                          f"in {result['seconds']:.2f}s after due); start lateness p50 "
                          f"{result['p50_lateness_ms']:.0f} ms p99 {result['p99_lateness_ms']:.0f} ms")
    finally:
        stop(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
