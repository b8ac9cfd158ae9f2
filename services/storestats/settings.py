"""Store statistics settings (see the README's table)."""

from pydantic import Field

from shared.settings import CommonSettings


class StoreStatsSettings(CommonSettings):
    storestats_port: int = 8009  # /healthz /readyz /metrics (faust's web server)
    storestats_window_s: int = 60  # tumbling windows, event time (`occurred_at`)
    # Counted images are kept this long (by window start) to recognise repeats; a repeat of an
    # older one would count again. The per-store counters are kept for ever.
    storestats_keep_s: int = 7 * 24 * 3600
    # how often the counted images older than that are pruned
    storestats_prune_every_s: float = Field(600.0, gt=0)
    storestats_data_dir: str = ".state/storestats"  # faust's data dir (it keeps no tables here)
    # CPU priority (Unix niceness): a downstream report yields to the core on a shared machine.
    # 19, below the processors and the status fold (10): in a burst the statistics catch up
    # after the jobs are done instead of taking a share of the CPU from them (docs/architecture.md,
    # "CPU priority", has the measurement); under sustained overload they lag and catch up after.
    storestats_nice: int = 19

    @property
    def app_id(self) -> str:
        """faust's app id: the consumer group and the prefix of its own topics."""
        return self.consumer_group("storestats")

    @property
    def stats_topic(self) -> str:
        return f"{self.kafka_topic_prefix}.store-stats"
