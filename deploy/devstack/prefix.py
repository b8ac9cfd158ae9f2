"""Run a command and prefix each of its output lines with a name:
`prefix NAME [--user USER] -- CMD...`.

supervisord gives every program its own stdout; this makes `make run` read like
`docker compose up`, one terminal with `name | line` from every process. Signals sent to the
wrapper are forwarded once to the child, and the wrapper exits with the child's code.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

from deploy.devstack.postgres import as_user


def _die_with_parent() -> None:
    """Linux: SIGTERM the child if this wrapper dies (even by SIGKILL), so a restarted program
    never finds its port held by an orphan. Runs in the child after it switched user."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the wrapper died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> int:
    name, options, command = argv[0], argv[1:argv.index("--")], argv[argv.index("--") + 1:]
    user = options[options.index("--user") + 1] if "--user" in options else None
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,  # noqa: PLW1509
                             preexec_fn=_die_with_parent, **as_user(user))
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    label = f"{name:<12}| ".encode()
    assert child.stdout is not None
    for line in iter(child.stdout.readline, b""):
        sys.stdout.buffer.write(label + line)
        sys.stdout.buffer.flush()
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
