#!/bin/bash
# Creates the cluster, its superuser POSTGRES_USER (password POSTGRES_PASSWORD) and database
# POSTGRES_DB the first time (until that set-up has completed once); a kept volume is used as it is. Then runs the server.
set -euo pipefail
: "${POSTGRES_USER:?}" "${POSTGRES_PASSWORD:?}" "${POSTGRES_DB:?}"
ready_mark="$PGDATA/.imagejobs-initialized"  # written last: a set-up cut short is redone
if [ ! -f "$ready_mark" ]; then
  find "$PGDATA" -mindepth 1 -delete
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb -D "$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  echo "CREATE DATABASE \"$POSTGRES_DB\";" | postgres --single -D "$PGDATA" postgres >/dev/null
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  cat >>"$PGDATA/postgresql.conf" <<CONF
listen_addresses = '*'
max_connections = 200
shared_buffers = 256MB
CONF
  touch "$ready_mark"
fi
exec postgres -D "$PGDATA"
