"""Store statistics settings (see the README's table)."""

from __future__ import annotations

from pydantic import Field, model_validator

from services.storestats.yielding import YieldRule
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
    # While the other processes keep this share of every CPU busy, counting waits (no batch is
    # written; faust stops fetching once its buffer is full), at most STORESTATS_YIELD_MAX_S at a
    # time; 0: never waits (services/storestats/yielding.py). The longest wait is at most half of
    # STALL_S, so /readyz does not take a deliberate wait (and the batch around it) for a stall.
    storestats_yield_above: float = Field(0.9, ge=0, le=1)
    storestats_yield_max_s: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _wait_shorter_than_a_stall(self) -> StoreStatsSettings:
        if self.storestats_yield_max_s > self.stall_s / 2:
            raise ValueError(f"STORESTATS_YIELD_MAX_S ({self.storestats_yield_max_s:g}) must be at most half of "
                             f"STALL_S ({self.stall_s:g}): a longer wait would read as a stalled consumer")
        return self

    @property
    def yield_rule(self) -> YieldRule:
        return YieldRule(self.storestats_yield_above, self.storestats_yield_max_s)

    @property
    def app_id(self) -> str:
        """faust's app id: the consumer group and the prefix of its own topics."""
        return self.consumer_group("storestats")

    @property
    def stats_topic(self) -> str:
        return f"{self.kafka_topic_prefix}.store-stats"
