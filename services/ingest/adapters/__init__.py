"""The ingest service's adapters, the real ports of services/ingest/ports.py: the Idempotency-Key
store and the admissions (PostgreSQL), publishing jobs (Kafka), the pending images read from the
status view (PostgreSQL)."""
