"""The scheduler's SQL: the durable schedule (`scheduler_jobs`) and command decisions."""
