"""The status service's adapters: the projector (the one fold of the topics into the view), the
view in PostgreSQL, the webhook deliveries and sender, retention, and the Kafka clients."""
