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


class OncePer(logging.Filter):
    """Lets a record of loggers under `prefix` through at most once per `every_s` for each
    message template (its unformatted `msg`): a library that repeats one error a hundred times a
    second while a broker restarts says it once a minute, and its rare errors still show.

    aiokafka logs conditions it retries on its own (a broker not up yet, no group coordinator
    yet) at ERROR; they are shown as WARNING, so ERROR keeps meaning "someone should look": only
    a record with a traceback (one of its tasks died) stays ERROR."""

    def __init__(self, prefix: str, every_s: float) -> None:
        super().__init__()
        self.prefix, self.every_s = prefix, every_s
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefix):
            return True
        key = (record.name, str(record.msg))
        last = self._last.get(key)
        if last is not None and record.created - last < self.every_s:
            return False
        if len(self._last) > 1000:  # templates, not values: a handful; bounded all the same
            self._last.clear()
        self._last[key] = record.created
        if record.levelno == logging.ERROR and not record.exc_info:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def configure_logging(level: str = "INFO", as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        json_formatter() if as_json
        else logging.Formatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every failed connection attempt at ERROR while the broker restarts: its
    # errors are kept (a task of its that died is logged only there), each kind once a minute.
    kafka = logging.getLogger("aiokafka")
    kafka.setLevel(logging.ERROR if level.upper() != "DEBUG" else "DEBUG")
    handler.addFilter(OncePer("aiokafka", 60.0))
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
