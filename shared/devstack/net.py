"""Small socket helpers for choosing and checking loopback ports."""

from __future__ import annotations

import socket
import time

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


def wait_for_port(port: int, deadline_s: float, host: str = "127.0.0.1") -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def tail(path: object, lines: int = 20) -> str:
    """The last `lines` lines of a log file, or a note that there is none."""
    from pathlib import Path

    p = Path(str(path))
    if not p.exists():
        return f"(no log at {p})"
    text = p.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])
