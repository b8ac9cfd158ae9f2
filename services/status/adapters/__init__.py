"""The status service's adapters: the view in PostgreSQL and the Kafka end-offsets client."""
