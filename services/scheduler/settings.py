"""Scheduler settings."""

from shared.settings import CommonSettings


class SchedulerSettings(CommonSettings):
    scheduler_port: int = 8002
    scheduler_release_batch: int = 500  # jobs released together when many fall due at once
