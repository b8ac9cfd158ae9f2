"""Small socket helpers for choosing and checking loopback ports."""

from __future__ import annotations

import random
import socket
from pathlib import Path

from deploy.devstack.errors import LauncherError

# Ports handed out come from below the kernel's ephemeral range (ip_local_port_range), from
# LOWEST_CHOSEN_PORT up. A port from inside that range could be given to an outgoing connection
# (any process's, including the new service's own connections to Kafka and PostgreSQL, which it
# opens before it binds its HTTP port) between choosing it and binding it: one test session
# lost a processor to "address already in use" that way.
LOWEST_CHOSEN_PORT = 20000
_cursor: int | None = None  # the next port to try; advances, so no port is handed out twice


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now and that no earlier call in this process
    returned; below the ephemeral range where there is room, else one the kernel picks."""
    global _cursor
    highest = _ephemeral_low() - 1
    span = highest - LOWEST_CHOSEN_PORT + 1
    if span < 1000:  # an unusual range: let the kernel choose
        return _kernel_port()
    if _cursor is None:
        _cursor = random.randrange(span)
    for _ in range(span):
        port = LOWEST_CHOSEN_PORT + _cursor % span
        _cursor += 1
        if not port_is_taken(port):
            return port
    return _kernel_port()


def _kernel_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_low(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    """The lowest port the kernel uses for outgoing connections (Linux; elsewhere 32768)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_is_taken(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def require_free_port(port: int, what: str, setting: str) -> None:
    """Fail with one line naming the setting to change when `port` is in use."""
    if port_is_taken(port):
        raise LauncherError(
            f"{what} cannot start: port {port} on 127.0.0.1 is already in use "
            f"(stop whatever listens there, or set {setting} to another port)"
        )


def tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file, or a note that there is none (under `make run`
    the servers log to the terminal instead)."""
    if not path.exists():
        return f"(no log at {path}; see the lines above)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
