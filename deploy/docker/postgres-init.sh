#!/bin/bash
# The application role, run as the superuser at every `docker compose up` (the `db-init` service;
# docs/operations.md "PostgreSQL roles"): APP_ROLE (imagejobs_app) logs in with APP_PASSWORD and
# is no superuser, may create no database and no role, and owns one schema, `imagejobs`, its
# search_path, where the services' migrations create every table. Idempotent: a role that exists
# gets the attributes and the password again, so changing APP_PASSWORD in .env and running `up`
# rotates it. Connects with the PG* variables (PGHOST, PGUSER, PGPASSWORD, PGDATABASE).
set -euo pipefail
: "${APP_PASSWORD:?APP_PASSWORD is required (the password of the application role)}" "${PGDATABASE:?}"
role=${APP_ROLE:-imagejobs_app}
for _ in $(seq 60); do pg_isready -q && break; sleep 1; done
psql -X -q -v ON_ERROR_STOP=1 -v role="$role" -v pw="$APP_PASSWORD" -v db="$PGDATABASE" <<'SQL'
SELECT format('CREATE ROLE %I', :'role') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'pw';
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"role";
CREATE SCHEMA IF NOT EXISTS imagejobs AUTHORIZATION :"role";
ALTER SCHEMA imagejobs OWNER TO :"role";
REVOKE ALL ON SCHEMA public FROM PUBLIC;
ALTER ROLE :"role" IN DATABASE :"db" SET search_path = imagejobs;
SQL
echo "postgres-init: role $role (no superuser) owns schema imagejobs of database $PGDATABASE"
