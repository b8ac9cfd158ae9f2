"""Status service settings."""

from pydantic import Field

from shared.settings import CommonSettings


class StatusSettings(CommonSettings):
    status_port: int = 8001
    status_read_your_writes_wait_s: float = 5.0  # how long a miss waits for the view to catch up
    # how long DELETE and PATCH wait for the scheduler's decision before answering 504
    status_command_wait_s: float = 30.0
    ingest_max_schedule_days: int = 366  # the submit's horizon applies to a reschedule too
    ingest_publish_timeout_s: float = 10.0
    api_keys: str = ""
    # Completion webhooks (services/status/handlers/webhooks.py): the signing secret (`whsec_` +
    # base64; empty: off), each attempt's deadline, how long a delivery is retried after the job
    # became final, the backoff (full jitter: random up to min(max, base * 2^attempts)), and
    # whether receivers on loopback or private networks may be called (the image hosts' rules).
    webhook_secret: str = ""
    webhook_timeout_s: float = 10.0
    webhook_retry_for_s: float = 86_400.0
    webhook_retry_base_s: float = 1.0
    webhook_retry_max_s: float = 3_600.0
    webhook_allow_private_networks: bool = False
    # CPU priority (Unix niceness): below the processors. Folding and reads yield to ingest and to
    # processing on a shared machine, so a client polling in a tight loop cannot take CPU from
    # the work: at 5, `make bench`'s 16 polling connections made 26-34k reads per burst (a read
    # costs its client more than it costs us) and the burst ran at 1,800 images/s; at 10, 11-15k
    # reads and ~1,970-2,270; at 14, 3-11k reads and ~2,200-2,800, streams and webhooks as fast
    # and their delays still far inside their goals (docs/architecture.md, "CPU priority")
    status_nice: int = 14
    # progress streams (GET /api/jobs/{id}/events): how often the shared poller reads the
    # watched jobs (the stream's added latency), a comment line every heartbeat so proxies keep
    # an idle stream open, and past the cap a new stream is answered 503 (HTTP_MAX_CONNECTIONS
    # leaves room above it). A client that stops reading is cut off after HTTP_SEND_TIMEOUT_S,
    # like any response's.
    status_stream_poll_s: float = 0.1
    # a stream's intermediate statuses at most this often (the latest when the gap is over; the
    # final one at once): each event is a socket write, and a job's counts change with nearly
    # every fold batch (handlers/progress.py); 0 sends every change
    status_stream_min_gap_s: float = 1.0
    status_stream_heartbeat_s: float = Field(15.0, ge=0)  # 0: no heartbeat
    status_max_streams: int = 3072
    # status reads from memory (handlers/read_cache.py): how many jobs are held (0: off) and how
    # old an answer may be at most (what anything but this process's fold changed shows by then)
    status_read_cache_jobs: int = 50_000
    status_read_cache_age_s: float = 5.0
