#!/usr/bin/env bash
# Start a real multi-node SLURM (Debian 12 slurm-wlm 22.05) on this one machine.
#
# One slurmctld plus one `slurmd -N nodeK` per node, all on 127.0.0.1 with distinct
# ports, spool dirs, logs and pid files under $SLURM_BASE. Fake GPUs are symlinks to
# /dev/null (slurmd only needs character devices). Runs as root; no systemd, no cgroups.
# Running it again while a cluster is up stops that cluster first (clean restart).
#
# Usage:  scripts/local_slurm/start.sh && . /tmp/perfsanity-slurm/env.sh
#
# Settings (environment variables, defaults in brackets):
#   SLURM_BASE [/tmp/perfsanity-slurm]  config, state, logs, pid files (wiped on start)
#   NUM_NODES [4]  CPUS_PER_NODE [4]  MEM_PER_NODE [4000 MB]  GPUS_PER_NODE [4, 0 = none]
#   WITH_SACCT [0]      1 = also run MariaDB + slurmdbd so that `sacct` works
#   LINK_ETC [1]        1 = symlink /etc/slurm/{slurm,gres}.conf to ours (clients then
#                       work without SLURM_CONF); an existing real file is left alone
#   INSTALL [1]         1 = apt-get install missing packages
#   CTLD_PORT [6817]  SLURMD_BASE_PORT [17000] (nodeK uses +K)  DBD_PORT [6819]  DB_PORT [13306]
#   START_TIMEOUT [60]  seconds to wait for every node to be idle
set -euo pipefail

SLURM_BASE=${SLURM_BASE:-/tmp/perfsanity-slurm}
NUM_NODES=${NUM_NODES:-4}
CPUS_PER_NODE=${CPUS_PER_NODE:-4}
MEM_PER_NODE=${MEM_PER_NODE:-4000}
GPUS_PER_NODE=${GPUS_PER_NODE:-4}
WITH_SACCT=${WITH_SACCT:-0}
LINK_ETC=${LINK_ETC:-1}
INSTALL=${INSTALL:-1}
CTLD_PORT=${CTLD_PORT:-6817}
SLURMD_BASE_PORT=${SLURMD_BASE_PORT:-17000}
DBD_PORT=${DBD_PORT:-6819}
DB_PORT=${DB_PORT:-13306}
START_TIMEOUT=${START_TIMEOUT:-60}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
etc_dir=$SLURM_BASE/etc
run_dir=$SLURM_BASE/run
log_dir=$SLURM_BASE/log
spool_dir=$SLURM_BASE/spool
env_file=$SLURM_BASE/env.sh
export SLURM_CONF=$etc_dir/slurm.conf

t0=$(date +%s%N)
say() {
    local ms=$((($(date +%s%N) - t0) / 1000000))
    printf '[local_slurm %d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*"
}
show_logs=0 # set once this run has started daemons whose logs can explain a failure
fail() {
    echo "local_slurm: ERROR: $*" >&2
    [ "$show_logs" = 1 ] || exit 1
    local f
    for f in "$log_dir"/*.log; do
        [ -f "$f" ] || continue
        echo "--- last lines of $f" >&2
        tail -n 15 "$f" >&2
    done
    exit 1
}
# wait_until SECONDS WHAT CMD...: poll CMD every 0.2 s; fail naming WHAT after SECONDS.
wait_until() {
    local limit=$1 what=$2 deadline
    shift 2
    deadline=$(($(date +%s) + limit))
    until "$@"; do
        [ "$(date +%s)" -lt "$deadline" ] || fail "timed out after ${limit}s waiting for $what"
        sleep 0.2
    done
}
is_int() { [[ $1 =~ ^[0-9]+$ ]]; }

[ "$(id -u)" = 0 ] || fail "must run as root"
for v in NUM_NODES CPUS_PER_NODE MEM_PER_NODE GPUS_PER_NODE CTLD_PORT SLURMD_BASE_PORT \
    DBD_PORT DB_PORT START_TIMEOUT; do
    is_int "${!v}" || fail "$v must be a non-negative integer, got '${!v}'"
done
[ "$NUM_NODES" -ge 1 ] || fail "NUM_NODES must be >= 1"
case $SLURM_BASE in
/ | /tmp | /tmp/ | "") fail "refusing SLURM_BASE=$SLURM_BASE (it is wiped on start)" ;;
esac

# 0. a previous cluster from this script: stop it, then start from an empty base dir.
if [ -d "$run_dir" ]; then
    say "stopping the previous cluster in $SLURM_BASE"
    SLURM_BASE=$SLURM_BASE "$here/stop.sh" >/dev/null || fail "stop.sh failed"
fi
rm -rf "$SLURM_BASE"
mkdir -p "$etc_dir" "$run_dir" "$log_dir" "$spool_dir/ctld" "$SLURM_BASE/fakegpu"
for ((k = 1; k <= NUM_NODES; k++)); do mkdir -p "$spool_dir/node$k"; done
show_logs=1

# 1. packages.
pkgs=(slurmctld slurmd slurm-client munge)
if [ "$WITH_SACCT" = 1 ]; then pkgs+=(slurmdbd mariadb-server); fi
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$INSTALL" = 1 ] || fail "missing packages (INSTALL=0): ${missing[*]}"
    say "apt-get install ${missing[*]}"
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    # Containers block service auto-start (policy-rc.d); on systemd hosts the Debian units
    # need /etc/slurm/slurm.conf, which does not exist yet, so nothing starts behind our back.
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        --no-install-recommends "${missing[@]}" >"$log_dir/apt.log" 2>&1 ||
        fail "apt-get install failed, see $log_dir/apt.log"
fi

# 2. munge: reuse a working munged, otherwise start one and record it as ours.
munge_ok() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }
if ! munge_ok; then
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --keyfile=/etc/munge/munge.key --force
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 755 /run/munge
    rm -f /run/munge/munged.pid
    # --force: start even if a killed munged left its socket or lock behind
    runuser -u munge -- /usr/sbin/munged --force
    wait_until 10 "munged to write /run/munge/munged.pid" test -s /run/munge/munged.pid
    cp /run/munge/munged.pid "$run_dir/munged.pid"
    wait_until 10 "munged to answer munge/unmunge" munge_ok
    say "munged started (pid $(cat "$run_dir/munged.pid"))"
else
    say "reusing the running munged"
fi

# 3. configuration.
if [ "$WITH_SACCT" = 1 ]; then
    acct_lines="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
JobAcctGatherType=jobacct_gather/linux"
else
    acct_lines="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi
gres_node=""
if [ "$GPUS_PER_NODE" -gt 0 ]; then gres_node="Gres=gpu:$GPUS_PER_NODE"; fi
if [ "$NUM_NODES" -eq 1 ]; then nodes="node1"; else nodes="node[1-$NUM_NODES]"; fi
if [ "$NUM_NODES" -eq 1 ]; then
    ports=$((SLURMD_BASE_PORT + 1))
else
    ports="[$((SLURMD_BASE_PORT + 1))-$((SLURMD_BASE_PORT + NUM_NODES))]"
fi

cat >"$etc_dir/slurm.conf" <<EOF
# generated by scripts/local_slurm/start.sh
ClusterName=perfsanity
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# bind to the configured addresses (127.0.0.1), never to INADDR_ANY
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
StateSaveLocation=$spool_dir/ctld
SlurmdSpoolDir=$spool_dir/%n
SlurmctldPidFile=$run_dir/slurmctld.pid
SlurmdPidFile=$run_dir/slurmd-%n.pid
SlurmctldLogFile=$log_dir/slurmctld.log
SlurmdLogFile=$log_dir/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# nodes may claim more CPUs / memory than the host has
SlurmdParameters=config_overrides
ReturnToService=2
# finished jobs stay visible to 'scontrol show job' for an hour; quick kill on cancel
MinJobAge=3600
KillWait=5
MailProg=/bin/true
JobCompType=jobcomp/none
$acct_lines
GresTypes=gpu
NodeName=$nodes NodeHostname=localhost NodeAddr=127.0.0.1 Port=$ports CPUs=$CPUS_PER_NODE RealMemory=$MEM_PER_NODE $gres_node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

# gres.conf sits next to slurm.conf. A GPU needs a File= that is a character device,
# else slurmd drops it; a symlink to /dev/null passes and the index feeds CUDA_VISIBLE_DEVICES.
{
    echo "AutoDetect=off"
    if [ "$GPUS_PER_NODE" -gt 0 ]; then
        for ((i = 0; i < GPUS_PER_NODE; i++)); do
            ln -s /dev/null "$SLURM_BASE/fakegpu/nvidia$i"
        done
        if [ "$GPUS_PER_NODE" -eq 1 ]; then files=nvidia0; else files="nvidia[0-$((GPUS_PER_NODE - 1))]"; fi
        echo "NodeName=$nodes Name=gpu File=$SLURM_BASE/fakegpu/$files"
    fi
} >"$etc_dir/gres.conf"

if [ "$LINK_ETC" = 1 ]; then
    mkdir -p /etc/slurm
    for f in slurm.conf gres.conf; do
        if [ -e "/etc/slurm/$f" ] && [ ! -L "/etc/slurm/$f" ]; then
            echo "local_slurm: WARNING: /etc/slurm/$f is a real file; left alone, use SLURM_CONF" >&2
        else
            ln -sfn "$etc_dir/$f" "/etc/slurm/$f"
        fi
    done
fi

# 4. optional accounting: MariaDB on 127.0.0.1:$DB_PORT + slurmdbd.
if [ "$WITH_SACCT" = 1 ]; then
    db_dir=$SLURM_BASE/mysql
    mkdir -p "$db_dir"
    mariadb-install-db --no-defaults --user=root --datadir="$db_dir/data" \
        --auth-root-authentication-method=normal --skip-test-db >"$log_dir/mariadb-install.log" 2>&1 ||
        fail "mariadb-install-db failed"
    setsid mariadbd --no-defaults --user=root --datadir="$db_dir/data" \
        --socket="$db_dir/mysqld.sock" --pid-file="$run_dir/mariadbd.pid" \
        --bind-address=127.0.0.1 --port="$DB_PORT" --innodb-buffer-pool-size=128M \
        --innodb-lock-wait-timeout=900 --log-error="$log_dir/mariadbd.log" \
        </dev/null >/dev/null 2>&1 &
    db_ok() { mariadb --no-defaults -S "$db_dir/mysqld.sock" -uroot -e 'select 1' >/dev/null 2>&1; }
    wait_until 30 "MariaDB on 127.0.0.1:$DB_PORT to accept connections" db_ok
    mariadb --no-defaults -S "$db_dir/mysqld.sock" -uroot -e "
        CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" || fail "cannot create the slurm DB user"
    cat >"$etc_dir/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
CommunicationParameters=NoInAddrAny
SlurmUser=root
LogFile=$log_dir/slurmdbd.log
PidFile=$run_dir/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$etc_dir/slurmdbd.conf" # slurmdbd refuses a readable-by-others config
    slurmdbd                           # finds slurmdbd.conf next to $SLURM_CONF
    dbd_ok() { sacctmgr -n -P list cluster >/dev/null 2>&1; }
    wait_until 30 "slurmdbd on 127.0.0.1:$DBD_PORT to answer sacctmgr" dbd_ok
    say "MariaDB + slurmdbd up"
fi

# 5. slurmctld and one slurmd per node (each daemonizes and writes its pid file).
slurmctld -i
for ((k = 1; k <= NUM_NODES; k++)); do slurmd -N "node$k"; done
say "daemons launched; waiting up to ${START_TIMEOUT}s for $NUM_NODES nodes ($nodes) to be idle"
idle_count() { sinfo -h -N -t idle -o '%N' 2>/dev/null | sort -u | wc -l; }
all_idle() { [ "$(idle_count)" -ge "$NUM_NODES" ]; }
deadline=$(($(date +%s) + START_TIMEOUT))
until all_idle; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        sinfo -N -o '%N %T %E' >&2 || true
        fail "timed out after ${START_TIMEOUT}s waiting for $NUM_NODES idle nodes ($nodes); $(idle_count) idle"
    fi
    sleep 0.2
done

cat >"$env_file" <<EOF
# written by scripts/local_slurm/start.sh; source it before using the cluster
export SLURM_CONF=$SLURM_CONF
export PERFSANITY_SLURM_BASE=$SLURM_BASE
export PERFSANITY_SLURM_NODES='$nodes'
export PERFSANITY_SLURM_NUM_NODES=$NUM_NODES
export PERFSANITY_SLURM_GPUS_PER_NODE=$GPUS_PER_NODE
export PERFSANITY_SLURM_PARTITION=debug
export PERFSANITY_SLURM_SACCT=$WITH_SACCT
EOF
sinfo -N -o '%N %P %T %c %G'
say "cluster ready; env file: $env_file"
