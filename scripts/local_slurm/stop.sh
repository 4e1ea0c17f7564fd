#!/usr/bin/env bash
# Stop the cluster that scripts/local_slurm/start.sh started, by the PIDs in its pid files.
#
# Jobs are cancelled first (while slurmd can still clean their steps up), then the
# daemons are stopped: slurmd per node, slurmctld, slurmdbd, mariadbd and munged (the
# latter only if start.sh started it). Nothing is killed by name. PID 1 here does not
# reap, so a stopped daemon can stay as a zombie: liveness is checked with `ps -o stat=`.
#
# Settings: SLURM_BASE [/tmp/perfsanity-slurm]; CLEAN [0] (1 = also delete SLURM_BASE);
#           STOP_TIMEOUT [10] seconds per daemon before SIGKILL.
set -uo pipefail

SLURM_BASE=${SLURM_BASE:-/tmp/perfsanity-slurm}
CLEAN=${CLEAN:-0}
STOP_TIMEOUT=${STOP_TIMEOUT:-10}
run_dir=$SLURM_BASE/run
export SLURM_CONF=$SLURM_BASE/etc/slurm.conf

# alive PID: the process exists and is not a zombie.
alive() {
    local st
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [ -n "$st" ] && [[ $st != Z* ]]
}

# stop_pidfile FILE NAME: TERM the process in FILE if it is alive and is NAME, then KILL
# it if it is still alive after STOP_TIMEOUT seconds. The file is removed either way.
stop_pidfile() {
    local file=$1 name=$2 pid comm i
    [ -f "$file" ] || return 0
    pid=$(tr -dc '0-9' <"$file")
    rm -f "$file"
    [ -n "$pid" ] && alive "$pid" || return 0
    comm=$(ps -o comm= -p "$pid" 2>/dev/null)
    if [ "$comm" != "$name" ]; then
        echo "pid $pid from $file is '$comm', not $name: left alone"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < STOP_TIMEOUT * 5; i++)); do
        alive "$pid" || return 0
        sleep 0.2
    done
    echo "$name (pid $pid) still running after ${STOP_TIMEOUT}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null
    return 0
}

if [ ! -d "$run_dir" ]; then
    echo "no cluster state in $SLURM_BASE: nothing to stop"
    exit 0
fi

# 1. cancel every job while the daemons are still up, and wait (bounded) for them to go.
if [ -f "$run_dir/slurmctld.pid" ] && squeue -h >/dev/null 2>&1; then
    mapfile -t job_ids < <(squeue -h -o %A 2>/dev/null)
    if [ "${#job_ids[@]}" -gt 0 ]; then
        scancel "${job_ids[@]}" 2>/dev/null
        for ((i = 0; i < 60; i++)); do
            [ -z "$(squeue -h 2>/dev/null)" ] && break
            sleep 0.25
        done
    fi
fi

# 2. daemons, in reverse order of start.
for f in "$run_dir"/slurmd-*.pid; do
    [ -e "$f" ] && stop_pidfile "$f" slurmd
done
stop_pidfile "$run_dir/slurmctld.pid" slurmctld
stop_pidfile "$run_dir/slurmdbd.pid" slurmdbd
stop_pidfile "$run_dir/mariadbd.pid" mariadbd
stop_pidfile "$run_dir/munged.pid" munged

# 3. /etc/slurm symlinks that point into our base dir.
for f in slurm.conf gres.conf; do
    if [ -L "/etc/slurm/$f" ] && [[ "$(readlink "/etc/slurm/$f")" == "$SLURM_BASE"/* ]]; then
        rm -f "/etc/slurm/$f"
    fi
done
rm -f "$SLURM_BASE/env.sh"
if [ "$CLEAN" = 1 ]; then rm -rf "$SLURM_BASE"; fi
echo "local_slurm: stopped"
