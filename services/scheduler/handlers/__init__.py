"""The scheduler's use cases: `jobs` consumes the jobs topic (submissions into the durable
schedule, cancel and reschedule decided) and `release` keeps the timer and releases due jobs."""
