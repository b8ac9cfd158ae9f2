"""Small socket helpers for choosing and checking loopback ports."""

from __future__ import annotations

import socket
from pathlib import Path

from shared.devstack.errors import LauncherError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
