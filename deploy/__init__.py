"""Deployment tooling, never imported by the services: the local dev stack (`python -m deploy.devstack`,
what `make run` starts), the containers' readiness probe (healthcheck.py), the secured cluster's
topics and ACLs (kafka_init.py, the kafka-init container) and the store master import (stores.py).
The Docker, Kafka, Grafana and Prometheus files sit in the folders beside them."""
