"""Run a command and prefix each of its output lines with a name:
`prefix NAME [--user USER] -- CMD...`.

supervisord gives every program its own stdout; this makes `make run` read like
`docker compose up`, one terminal with `name | line` from every process. Signals sent to the
wrapper are forwarded once to the child, and the wrapper exits with the child's code.
"""

from __future__ import annotations

import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    name, options, command = argv[0], argv[1:argv.index("--")], argv[argv.index("--") + 1:]
    user = options[options.index("--user") + 1] if "--user" in options else None
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, user=user)
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
