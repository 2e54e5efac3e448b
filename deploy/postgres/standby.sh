#!/bin/sh
# The synchronous standby: a base backup of the primary with -R the first
# time (standby.signal, and primary_conninfo with application_name=standby,
# the name synchronous_standby_names gives), then PostgreSQL as the image
# runs it.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	export PGPASSWORD="$(cat /run/secrets/replication_password)"
	until pg_basebackup -h postgres-primary -U replicator -D "$PGDATA" -R -X stream -d "application_name=standby"; do
		echo "waiting for the primary"; rm -rf "${PGDATA:?}"/*; sleep 2
	done
	chmod 700 "$PGDATA"
fi
exec docker-entrypoint.sh postgres
