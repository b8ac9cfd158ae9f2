# PostgreSQL 15 from Debian's packages (the same server the local stack runs).
FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q && apt-get install -y -q --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
COPY deploy/docker/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
COPY deploy/docker/postgres-init.sh /usr/local/bin/postgres-init
# the cluster is a directory inside the volume, so its first set-up can be renamed into place
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data/pgdata
USER postgres
VOLUME /var/lib/postgresql/data
EXPOSE 5432
HEALTHCHECK --interval=2s --timeout=3s --retries=60 \
    CMD pg_isready -q -h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB"
# SIGINT is PostgreSQL's fast shutdown (SIGTERM waits for every pooled client to leave)
STOPSIGNAL SIGINT
ENTRYPOINT ["postgres-entrypoint"]
