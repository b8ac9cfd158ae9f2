#!/bin/bash
# Creates the cluster, its superuser POSTGRES_USER (password POSTGRES_PASSWORD) and database
# POSTGRES_DB the first time, then runs the server. The set-up happens in a scratch directory
# renamed to PGDATA only once complete, so a set-up cut short is simply redone and a cluster
# that exists (a kept volume) is never touched.
set -euo pipefail
: "${POSTGRES_USER:?}" "${POSTGRES_PASSWORD:?}" "${POSTGRES_DB:?}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  scratch="$PGDATA.init"
  rm -rf "$scratch"
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb -D "$scratch" --username="$POSTGRES_USER" --pwfile="$pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  echo "CREATE DATABASE \"$POSTGRES_DB\";" | postgres --single -D "$scratch" postgres >/dev/null
  echo "host all all all scram-sha-256" >>"$scratch/pg_hba.conf"
  cat >>"$scratch/postgresql.conf" <<CONF
listen_addresses = '*'
max_connections = 200
shared_buffers = 256MB
CONF
  mv "$scratch" "$PGDATA"
fi
exec postgres -D "$PGDATA"
