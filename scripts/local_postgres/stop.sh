#!/usr/bin/env bash
# Stop the PostgreSQL server that scripts/local_postgres/start.sh started, by its pid.
#
# Sends SIGINT (PostgreSQL's "fast" shutdown) to the postmaster recorded in the pid file and
# waits for it; SIGKILL after STOP_TIMEOUT seconds. PID 1 here does not reap, so a stopped
# postmaster may linger as a zombie: liveness is checked with `ps -o stat=`.
#
# Settings: PG_BASE [/tmp/perfsanity-pg]; CLEAN [0] (1 = also delete PG_BASE);
#           STOP_TIMEOUT [20] seconds before SIGKILL.
set -uo pipefail

PG_BASE=${PG_BASE:-/tmp/perfsanity-pg}
CLEAN=${CLEAN:-0}
STOP_TIMEOUT=${STOP_TIMEOUT:-20}
pid_file=$PG_BASE/postgres.pid

alive() {
    local st
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [ -n "$st" ] && [[ $st != Z* ]]
}

pid=""
if [ -f "$pid_file" ]; then
    pid=$(tr -dc '0-9' <"$pid_file")
elif [ -f "$PG_BASE/data/postmaster.pid" ]; then
    pid=$(head -n 1 "$PG_BASE/data/postmaster.pid" | tr -dc '0-9')
fi

if [ -n "$pid" ] && alive "$pid"; then
    comm=$(ps -o comm= -p "$pid" 2>/dev/null)
    if [ "$comm" != postgres ]; then
        echo "local_postgres: pid $pid is '$comm', not postgres: left alone"
    else
        kill -INT "$pid" 2>/dev/null
        for ((i = 0; i < STOP_TIMEOUT * 5; i++)); do
            alive "$pid" || break
            sleep 0.2
        done
        if alive "$pid"; then
            echo "local_postgres: postgres (pid $pid) still running after ${STOP_TIMEOUT}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
    fi
    echo "local_postgres: stopped (pid $pid)"
else
    echo "local_postgres: no running server recorded in $PG_BASE"
fi
rm -f "$pid_file" "$PG_BASE/env.sh"
if [ "$CLEAN" = 1 ]; then rm -rf "$PG_BASE"; fi
exit 0
