"""Run a service's FastAPI app with uvicorn: SIGTERM drains, then the lifespan closes connections.

Draining: uvicorn stops accepting, then waits up to 15 s for every open connection to finish
its response. A response that lasts until the client leaves (a progress stream) would hold the
shutdown that long and then be cut; so the app registers what ends such responses cleanly
(`on_drain`), and it is called as the drain begins.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI
from uvicorn.server import STARTUP_FAILURE

from shared.heap import settled_after_start
from shared.http_guard import HttpLimits, guarded_protocol
from shared.logging import configure_logging
from shared.settings import CommonSettings

log = logging.getLogger(__name__)


def build_and_serve(build: Callable[[], FastAPI], settings: CommonSettings, port: int, nice: int = 0) -> None:
    """Build the app and serve it; a setting that cannot be read (API_KEYS, TENANT_WEIGHTS,
    IMAGE_FORMATS: a ValueError naming what is wrong) stops the process with one line and
    exit code 2, not a traceback."""
    configure_logging(settings.log_level, settings.log_json)
    try:
        app = build()
    except ValueError as exc:
        log.critical("cannot start: %s", exc)
        sys.exit(2)
    serve(app, settings, port, nice)


def serve(app: FastAPI, settings: CommonSettings, port: int, nice: int = 0) -> None:
    """Serve `app` on `port` at CPU priority `nice` (Unix niceness): on a saturated machine the
    front door (ingest) keeps priority over processing. Once the app has started, the garbage
    collector is set for a long run (shared/heap.py). Connections, request heads and bodies are
    held to the settings' limits (shared/http_guard.py)."""
    configure_logging(settings.log_level, settings.log_json)
    set_priority(nice)
    app.router.lifespan_context = settled_after_start(app.router.lifespan_context)
    config = uvicorn.Config(app, host=settings.http_host, port=port, log_config=None,
                            timeout_graceful_shutdown=15, access_log=False,
                            http=guarded_protocol(HttpLimits.from_settings(settings)))
    server = DrainingServer(config, drain_hooks(app))
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:  # what uvicorn.run does: a failed start exits non-zero
        sys.exit(STARTUP_FAILURE)


def on_drain(app: FastAPI, hook: Callable[[], None]) -> None:
    """Call `hook` (in the event loop) when the server starts shutting down, before it waits
    for open connections to finish."""
    drain_hooks(app).append(hook)


def drain_hooks(app: FastAPI) -> list[Callable[[], None]]:
    hooks: list[Callable[[], None]] | None = getattr(app.state, "drain_hooks", None)
    if hooks is None:
        hooks = app.state.drain_hooks = []
    return hooks


class DrainingServer(uvicorn.Server):
    """uvicorn's server, calling the app's drain hooks as its shutdown begins."""

    def __init__(self, config: uvicorn.Config, hooks: list[Callable[[], None]]) -> None:
        super().__init__(config)
        self._hooks = hooks

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for hook in self._hooks:
            try:
                hook()
            except Exception:  # one hook failing must not stop the shutdown
                log.exception("a drain hook failed")
        await super().shutdown(sockets)


def set_priority(nice: int) -> None:
    """Set the process's niceness to `nice`. Raising priority (a lower number than now) needs
    CAP_SYS_NICE (root); without it the process keeps its
    priority and says so once."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice == current:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except PermissionError:
        log.warning("cannot set CPU priority (nice) %d: not permitted; keeping %d", nice, current)
