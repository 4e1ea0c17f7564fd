#!/usr/bin/env bash
# Start a private PostgreSQL cluster for tests: Debian's server binaries, a fresh data dir
# under /tmp, listening only on 127.0.0.1 on a non-default port, with a database and a user
# for perfsanity. Running it again restarts from an empty data dir.
#
# Usage:  scripts/local_postgres/start.sh && . /tmp/perfsanity-pg/env.sh
#         (then PERFSANITY_TEST_PG_URL=postgresql+psycopg://perfsanity:...@127.0.0.1:55432/perfsanity)
#
# Settings (environment variables, defaults in brackets):
#   PG_BASE [/tmp/perfsanity-pg]  data dir, socket, log, pid file, env file (wiped on start)
#   PG_PORT [55432]   PG_DB [perfsanity]   PG_USER [perfsanity]   PG_PASSWORD [perfsanity]
#   INSTALL [1]       1 = apt-get install postgresql if it is missing
#   START_TIMEOUT [30] seconds pg_ctl may wait for the server to accept connections
set -euo pipefail

PG_BASE=${PG_BASE:-/tmp/perfsanity-pg}
PG_PORT=${PG_PORT:-55432}
PG_DB=${PG_DB:-perfsanity}
PG_USER=${PG_USER:-perfsanity}
PG_PASSWORD=${PG_PASSWORD:-perfsanity}
INSTALL=${INSTALL:-1}
START_TIMEOUT=${START_TIMEOUT:-30}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
data_dir=$PG_BASE/data
sock_dir=$PG_BASE/socket
log_file=$PG_BASE/postgres.log
pid_file=$PG_BASE/postgres.pid
env_file=$PG_BASE/env.sh

t0=$(date +%s%N)
say() {
    local ms=$((($(date +%s%N) - t0) / 1000000))
    printf '[local_postgres %d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*"
}
fail() {
    echo "local_postgres: ERROR: $*" >&2
    if [ -f "$log_file" ]; then
        echo "--- last lines of $log_file" >&2
        tail -n 20 "$log_file" >&2
    fi
    exit 1
}

[ "$(id -u)" = 0 ] || fail "must run as root (initdb runs as the postgres user)"
[[ $PG_PORT =~ ^[0-9]+$ ]] || fail "PG_PORT must be a number, got '$PG_PORT'"
[[ $START_TIMEOUT =~ ^[0-9]+$ ]] || fail "START_TIMEOUT must be a number of seconds"
for v in PG_DB PG_USER; do
    [[ ${!v} =~ ^[a-z_][a-z0-9_]*$ ]] || fail "$v must be a plain lower-case SQL name, got '${!v}'"
done
[[ $PG_PASSWORD =~ ^[A-Za-z0-9_.-]+$ ]] || fail "PG_PASSWORD may only hold [A-Za-z0-9_.-]"
case $PG_BASE in
/ | /tmp | /tmp/ | "") fail "refusing PG_BASE=$PG_BASE (it is wiped on start)" ;;
esac

# 0. a previous server from this script: stop it and start from an empty base dir.
if [ -f "$pid_file" ] || [ -f "$data_dir/postmaster.pid" ]; then
    say "stopping the previous server in $PG_BASE"
    PG_BASE=$PG_BASE "$here/stop.sh" >/dev/null || fail "stop.sh failed"
fi
rm -rf "$PG_BASE"

# 1. packages: Debian's server (the highest installed major version is used).
find_bindir() {
    local d
    d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
    [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && echo "$d"
}
if ! bindir=$(find_bindir); then
    [ "$INSTALL" = 1 ] || fail "PostgreSQL server is not installed (INSTALL=0)"
    say "apt-get install postgresql"
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        --no-install-recommends postgresql postgresql-client >/dev/null ||
        fail "apt-get install postgresql failed"
    bindir=$(find_bindir) || fail "postgresql installed but no initdb/pg_ctl under /usr/lib/postgresql"
fi
id postgres >/dev/null 2>&1 || fail "the postgres system user does not exist"

# 2. the port must be free: never talk to somebody else's server by mistake.
if (exec 3<>"/dev/tcp/127.0.0.1/$PG_PORT") 2>/dev/null; then
    fail "127.0.0.1:$PG_PORT is already in use by another process; set PG_PORT"
fi

# 3. initdb as postgres. Local socket: trust (the socket dir is private); TCP: password.
install -d -m 755 "$PG_BASE"
install -d -o postgres -g postgres -m 700 "$data_dir" "$sock_dir"
touch "$log_file" && chown postgres:postgres "$log_file"
runuser -u postgres -- "$bindir/initdb" -D "$data_dir" -U postgres -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >"$PG_BASE/initdb.log" 2>&1 ||
    fail "initdb failed, see $PG_BASE/initdb.log"
cat >>"$data_dir/postgresql.conf" <<EOF
# added by scripts/local_postgres/start.sh: private test server, durability not needed
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$sock_dir'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
max_connections = 50
EOF

# 4. start with a bounded wait (pg_ctl -w -t), record the postmaster pid.
runuser -u postgres -- "$bindir/pg_ctl" -D "$data_dir" -l "$log_file" -w -t "$START_TIMEOUT" start \
    >/dev/null || fail "server did not accept connections on 127.0.0.1:$PG_PORT within ${START_TIMEOUT}s"
head -n 1 "$data_dir/postmaster.pid" >"$pid_file"
say "postgres up on 127.0.0.1:$PG_PORT (pid $(cat "$pid_file"))"

# 5. user and database.
psql_admin() {
    runuser -u postgres -- "$bindir/psql" -X -q -h "$sock_dir" -p "$PG_PORT" -U postgres \
        -d postgres -v ON_ERROR_STOP=1 "$@"
}
psql_admin -c "CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD'" \
    -c "CREATE DATABASE $PG_DB OWNER $PG_USER" >/dev/null || fail "cannot create user/database"

url="postgresql+psycopg://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
cat >"$env_file" <<EOF
# written by scripts/local_postgres/start.sh; source it before running the tests
export PERFSANITY_TEST_PG_URL='$url'
export PERFSANITY_TEST_PG_DSN='postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB'
EOF
say "database $PG_DB ready; env file: $env_file"
echo "PERFSANITY_TEST_PG_URL=$url"
