"""Scheduler settings."""

from shared.settings import CommonSettings


class SchedulerSettings(CommonSettings):
    scheduler_port: int = 8002
    scheduler_release_batch: int = 500  # jobs released together when many fall due at once
    # Tasks handed to the processors and not finished yet, at most (split between scheduler
    # instances by the partitions they own). Enough to keep the processors busy through the
    # feedback loop's latency (outcome recorded, read by the scheduler, next task fetched: a few
    # hundred ms under load; 512 capped a burst at ~60% of its unwindowed rate); the rest waits
    # here, where it is shared fairly, rather than first-in-first-out in the tasks topic.
    dispatch_window: int = 2048
    # CPU priority (Unix niceness): the timer stays ahead of the processors so jobs go out on time
    # (lateness p99 ~200-400 ms at nice 5 vs ~90 ms at 0 with 1,000 jobs/s due); ingest, at -5,
    # still comes first
    scheduler_nice: int = 0
