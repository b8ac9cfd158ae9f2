# Apache Kafka 4 (KRaft, one broker+controller) from the same Maven Central jars as the local
# stack (deploy/kafka/pom.xml), on Debian's Java 17. Built by docker-compose.yml; no image from
# Docker Hub is needed beyond debian:bookworm-slim (make one with deploy/docker/prepare.sh).
FROM debian:bookworm-slim AS jre
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q && apt-get install -y -q --no-install-recommends openjdk-17-jre-headless ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# Certificate authorities of a TLS-inspecting proxy between this host and Maven Central, if any
# (deploy/docker/extra-ca/*.crt; none by default). This also refreshes Java's trust store.
COPY deploy/docker/extra-ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null

FROM jre AS jars
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q && apt-get install -y -q --no-install-recommends maven && rm -rf /var/lib/apt/lists/*
COPY deploy/kafka/pom.xml /build/pom.xml
RUN --mount=type=cache,target=/root/.m2 \
    mvn -q -B -f /build/pom.xml dependency:copy-dependencies -DoutputDirectory=/build/lib

FROM jre
COPY --from=jars /build/lib /opt/kafka/libs
COPY deploy/docker/kafka-log4j2.xml /opt/kafka/config/log4j2.xml
COPY deploy/docker/kafka-entrypoint.sh /usr/local/bin/kafka-entrypoint
COPY deploy/docker/kafka-scram-users.sh /usr/local/bin/kafka-scram-users
RUN useradd --system --home-dir /var/lib/kafka kafka \
    && mkdir -p /var/lib/kafka/data /opt/kafka/run && chown -R kafka /var/lib/kafka /opt/kafka/run
USER kafka
# Every piece of broker state is under this directory: KAFKA_LOG_DIRS points here.
VOLUME /var/lib/kafka/data
ENV KAFKA_LOG_DIRS=/var/lib/kafka/data KAFKA_HEAP_OPTS="-Xms256m -Xmx768m"
EXPOSE 9092 9094
# Healthy once the broker logged that it started and its listener accepts connections.
HEALTHCHECK --interval=2s --timeout=3s --retries=60 \
    CMD grep -q "Kafka Server started" /opt/kafka/run/server.log && bash -c "</dev/tcp/127.0.0.1/9092"
ENTRYPOINT ["kafka-entrypoint"]
