"""The processor's adapters: HTTP (image downloads behind the SSRF guard), SQL (result rows, the
store master) and Kafka (outcome events), and the in-memory dimension cache."""
