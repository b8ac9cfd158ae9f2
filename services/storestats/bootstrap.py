"""The store statistics composition root: the only module that builds the adapters (faust's
app, topic and producer, the PostgreSQL store, the pages) and hands them to the use case
(handlers.StoreCounter) as its ports."""

from __future__ import annotations

from faust.types import EventT

from services.storestats.adapters.store import PostgresStats
from services.storestats.adapters.stream import FaustDeadLetters, WindowTopic, add_agents
from services.storestats.adapters.web import add_pages
from services.storestats.app import StatsApp, stats_app
from services.storestats.handlers import StoreCounter
from services.storestats.settings import StoreStatsSettings


def build(settings: StoreStatsSettings) -> StatsApp:
    """The faust app with its agent, writer, pruning timer and pages, ready for faust.Worker."""
    stats = stats_app(settings)
    counter: StoreCounter[EventT] = StoreCounter(PostgresStats(stats.pool), WindowTopic(stats),
                                                 FaustDeadLetters(stats), stats.totals,
                                                 settings.storestats_window_s)
    add_agents(stats, counter.write_batch)
    add_pages(stats)
    return stats
