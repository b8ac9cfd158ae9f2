"""Scheduler settings."""

from shared.settings import CommonSettings


class SchedulerSettings(CommonSettings):
    scheduler_port: int = 8002
    scheduler_release_batch: int = 500  # jobs released together when many fall due at once
    # CPU priority (Unix niceness): releasing a huge backlog yields to ingest on a shared machine,
    # but stays ahead of the processors so jobs go out on time
    scheduler_nice: int = 5
