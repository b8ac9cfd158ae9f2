"""`python -m services.storestats`: live per-store statistics from the results topic (faust)."""

import asyncio
import logging
import sys

import faust
import uvloop

from services.storestats.adapters.topics import prepare_topics
from services.storestats.app import broker_credentials
from services.storestats.bootstrap import build
from services.storestats.settings import StoreStatsSettings
from shared.logging import configure_logging
from shared.serve import set_priority

if __name__ == "__main__":
    settings = StoreStatsSettings()
    configure_logging(settings.log_level, settings.log_json)
    set_priority(settings.storestats_nice)
    try:
        broker_credentials(settings)
    except ValueError as exc:  # one line and exit code 2, as the other services (shared/serve.py)
        logging.getLogger("services.storestats").critical("cannot start: %s", exc)
        sys.exit(2)
    asyncio.run(prepare_topics(settings))
    # uvloop, as the other services: faust's own loop work (its fetcher, agents, timers) was a
    # fifth of this process's CPU in the selector alone on asyncio's default loop
    asyncio.set_event_loop(uvloop.new_event_loop())
    stats = build(settings)
    faust.Worker(stats.app, loglevel=settings.log_level.lower(), quiet=True).execute_from_commandline()
