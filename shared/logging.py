"""One logging set-up for every service: plain lines in development, JSON in production
(python-json-logger: one object per line with `ts`, `level`, `logger`, `msg`, and `exc_info`
for a traceback)."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


def json_formatter() -> logging.Formatter:
    return JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                         rename_fields={"asctime": "ts", "levelname": "level", "name": "logger", "message": "msg"},
                         datefmt="%Y-%m-%dT%H:%M:%S")


def configure_logging(level: str = "INFO", as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        json_formatter() if as_json
        else logging.Formatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every failed connection attempt at ERROR while the broker restarts.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL if level.upper() != "DEBUG" else "DEBUG")
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
