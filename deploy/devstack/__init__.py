"""Local development stack: real Apache Kafka (KRaft) and PostgreSQL without Docker.

Used by `make run` (through supervisord) and by the pytest session fixtures, so the
stack the tests exercise is started by the same code as the one developers run.
"""
