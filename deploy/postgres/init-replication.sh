#!/bin/sh
# Run once by the postgres image's entrypoint on a new primary: the
# replication role the standby connects as, and its pg_hba line.
set -eu
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" <<SQL
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD '$(cat /run/secrets/replication_password)';
SQL
echo "host replication replicator all scram-sha-256" >>"$PGDATA/pg_hba.conf"
