"""The scheduler's use cases: `jobs` takes the jobs topic's records (submissions into the
durable schedule, commands to the releaser), `release` keeps the timer, releases due jobs and
decides cancel and reschedule, and `dispatch` hands released jobs' tasks out fairly. They take
their ports (services/scheduler/ports.py) as parameters; bootstrap.py wires them."""
