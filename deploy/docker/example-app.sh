#!/bin/sh
# The example application of docker-compose.yml. It is started by
# `vaultctl exec`, which put PGPASSWORD in its environment (never on a
# command line); it connects to its database with it every 30 s.
set -eu
: "${PGPASSWORD:?PGPASSWORD missing: start me with vaultctl exec}"
while :; do
  if psql -w -At -c "select 'connected as ' || current_user" ; then :; else echo "example-app: cannot connect" >&2; fi
  sleep 30
done
