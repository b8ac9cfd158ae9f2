"""The `imagejobs` command line (cli.py), the HTTP client it and the tests use (client.py) and the
dead-letter tools behind `imagejobs dlq` (dlq_tools.py): what a client or an operator runs, never
imported by the services."""
