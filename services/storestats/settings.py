"""Store statistics settings (see the README's table)."""

from shared.settings import CommonSettings


class StoreStatsSettings(CommonSettings):
    storestats_port: int = 8009  # /healthz /readyz /metrics (faust's web server)
    storestats_window_s: int = 60  # tumbling windows, event time (`occurred_at`)
    storestats_window_keep_s: int = 3600  # windows kept in the table (and its changelog) this long
    # A repeat of an outcome (same task_id) arriving within this long of the first is not counted
    # again; the table of seen task ids holds between one and two such periods.
    storestats_dedup_s: int = 600
    storestats_data_dir: str = ".state/storestats"  # faust's data dir (tables are in memory)
    # CPU priority (Unix niceness): a downstream report yields to the core on a shared machine
    storestats_nice: int = 10

    @property
    def app_id(self) -> str:
        """faust's app id: the consumer group and the prefix of its own topics."""
        return self.consumer_group("storestats")

    @property
    def stats_topic(self) -> str:
        return f"{self.kafka_topic_prefix}.store-stats"

    @property
    def by_store_topic(self) -> str:
        return f"{self.app_id}-outcomes-by-store"
