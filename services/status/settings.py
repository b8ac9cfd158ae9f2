"""Status service settings."""

from shared.settings import CommonSettings


class StatusSettings(CommonSettings):
    status_port: int = 8001
    status_read_your_writes_wait_s: float = 5.0  # how long a miss waits for the view to catch up
    # how long DELETE and PATCH wait for the scheduler's decision before answering 504
    status_command_wait_s: float = 30.0
    ingest_max_schedule_days: int = 366  # the submit's horizon applies to a reschedule too
    ingest_publish_timeout_s: float = 10.0
    api_keys: str = ""
    # CPU priority (Unix niceness): folding a burst yields to ingest on a shared machine; status
    # reads are small and stay fast at this level
    status_nice: int = 5
