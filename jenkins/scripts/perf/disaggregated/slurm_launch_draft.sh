# shellcheck shell=bash
# --- perfsanity draft launch logic (appended to launch.sh by submit.py) ---
# Reads the role plan exported above (roleNames/roleNodes/roleTasks/roleOverlap/roleIsWorker) and
# srunArgs. Runs: one install step per node, then one srun step per role. The job's exit code is the
# benchmark's verdict; any other role failing first cancels the job with a non-zero exit.
# Logic that needs tests lives in Python (perfsanity.*); this file is glue.
set -uo pipefail

jobDir=$PERFSANITY_JOB_DIR
logDir=$jobDir/logs
# A job that SLURM requeued (node failure, preemption; JobRequeue=1 is SLURM's default) runs this
# script again in the same job dir: move the previous run's outputs aside, or its roles would see the
# stale rendezvous (addresses, benchmark.status, *.failed) and dynamo discovery files.
if (( ${SLURM_RESTART_COUNT:-0} > 0 )); then
    prevRun=$jobDir/requeued/$SLURM_RESTART_COUNT
    mkdir -p "$prevRun"
    for f in rendezvous discovery logs client profiles results.json junit.xml report.json report.html \
        gate.json gate_junit.xml history_records.json; do
        if [[ -e $jobDir/$f ]]; then mv "$jobDir/$f" "$prevRun/"; fi
    done
    echo "[launch] requeued (restart $SLURM_RESTART_COUNT): previous run's outputs moved to $prevRun"
fi
mkdir -p "$logDir"
cd "$jobDir" || exit 1
export PYTHONPATH="$PERFSANITY_REPO${PYTHONPATH:+:$PYTHONPATH}"
export PERFSANITY_JOB_ID="${SLURM_JOB_ID:-local}"

log() { printf '[launch %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

stepPids=()
triage_and_exit() {
    local rc=$1 why=$2
    log "$why"
    python3 -m perfsanity.run.triage --job-dir "$jobDir" --reason "$why" || true
    for pid in "${stepPids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    exit "$rc"
}
trap 'triage_and_exit 143 "job received SIGTERM (scancel or time limit); role log tails follow"' TERM
trap 'triage_and_exit 130 "job received SIGINT"' INT

mapfile -t allNodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
if (( ${#allNodes[@]} < totalNodes )); then
    triage_and_exit 2 "allocation has ${#allNodes[@]} nodes, the topology needs $totalNodes"
fi
log "job ${SLURM_JOB_ID:-?}: $totalNodes node(s) [${allNodes[*]:0:totalNodes}], $totalGpus GPU(s), test $PERFSANITY_TEST_ID"

# 1. install once per node (the install script serialises ranks on a lock, bounded)
installCmd=(srun "${srunArgs[@]}" -N "$totalNodes" -n "$totalNodes" --ntasks-per-node=1
    -w "$(IFS=,; echo "${allNodes[*]:0:totalNodes}")" --kill-on-bad-exit=1 --job-name=install
    -o "$logDir/install.log" bash "$PERFSANITY_INSTALL_SH")
log "run: ${installCmd[*]}"
if ! timeout "$PERFSANITY_INSTALL_TIMEOUT" "${installCmd[@]}"; then
    triage_and_exit 1 "install step failed or exceeded ${PERFSANITY_INSTALL_TIMEOUT}s (see $logDir/install.log)"
fi

# 2. one step per role
declare -A pidRole=()
benchmarkPid=""
for i in "${!roleNames[@]}"; do
    role=${roleNames[$i]}
    hosts=()
    for n in ${roleNodes[$i]}; do hosts+=("${allNodes[$n]}"); done
    nNodes=${#hosts[@]}
    stepArgs=(-N "$nNodes" -n "${roleTasks[$i]}" -w "$(IFS=,; echo "${hosts[*]}")"
        --kill-on-bad-exit=1 --job-name="$role" -o "$logDir/$role.log")
    [[ ${roleOverlap[$i]} == 1 ]] && stepArgs+=(--overlap)
    [[ ${roleIsWorker[$i]} == 1 && -n $PERFSANITY_SRUN_MPI ]] && stepArgs+=("--mpi=$PERFSANITY_SRUN_MPI")
    log "$role: ${roleGpus[$i]} GPU(s), ${roleTasks[$i]} task(s) on ${hosts[*]}"
    log "run: DISAGG_SERVING_TYPE=$role srun ${srunArgs[*]} ${stepArgs[*]} bash $PERFSANITY_RUN_SH"
    DISAGG_SERVING_TYPE=$role srun "${srunArgs[@]}" "${stepArgs[@]}" bash "$PERFSANITY_RUN_SH" &
    pid=$!
    stepPids+=("$pid")
    pidRole[$pid]=$role
    [[ $role == BENCHMARK ]] && benchmarkPid=$pid
done

# 3. wait: the benchmark's exit code is the verdict; a role failing first ends the job
verdict=""
while [[ -z $verdict ]]; do
    finished=""
    wait -n -p finished "${stepPids[@]}"
    rc=$?
    [[ -z $finished ]] && continue
    role=${pidRole[$finished]}
    if [[ $finished == "$benchmarkPid" ]]; then
        log "BENCHMARK finished with exit code $rc"
        verdict=$rc
    elif (( rc != 0 )); then
        log "$role failed with exit code $rc; giving BENCHMARK up to ${PERFSANITY_SHUTDOWN_TIMEOUT}s to record it"
        if timeout "$PERFSANITY_SHUTDOWN_TIMEOUT" tail --pid="$benchmarkPid" -f /dev/null; then
            wait "$benchmarkPid"; verdict=$?
        else
            verdict=1
        fi
        (( verdict == 0 )) && verdict=1
        python3 -m perfsanity.run.triage --job-dir "$jobDir" --reason "$role failed with exit code $rc" || true
    else
        log "$role exited 0"
    fi
    remaining=()
    for pid in "${stepPids[@]}"; do [[ $pid != "$finished" ]] && remaining+=("$pid"); done
    stepPids=("${remaining[@]}")
    (( ${#stepPids[@]} == 0 )) && [[ -z $verdict ]] && verdict=1
done

# 4. servers stop on the benchmark's status file; bound the wait, then cancel what is left
deadline=$((SECONDS + PERFSANITY_SHUTDOWN_TIMEOUT))
for pid in "${stepPids[@]}"; do
    left=$((deadline - SECONDS)); (( left < 1 )) && left=1
    if ! timeout "$left" tail --pid="$pid" -f /dev/null; then
        log "${pidRole[$pid]} still running after ${PERFSANITY_SHUTDOWN_TIMEOUT}s; stopping it"
        kill -TERM "$pid" 2>/dev/null || true
    fi
done
wait
log "done: exit code $verdict"
exit "$verdict"
