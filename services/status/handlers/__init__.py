"""The status service's use cases, each given its ports (services/status/ports.py) by
bootstrap.py: `jobs` reads a job (with read-your-writes), `commands` forwards cancel and
reschedule to the release owner, `progress` follows a job until final, `webhooks` sends and
shows completion webhooks. They answer with the API's models (shared/api.py) or raise the
domain's errors; app.py turns both into HTTP."""
