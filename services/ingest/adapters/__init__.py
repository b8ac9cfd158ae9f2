"""The ingest service's adapters: the Idempotency-Key store (SQL) and publishing jobs (Kafka)."""
