# shellcheck shell=bash
# --- perfsanity preflight (spliced into launch.sh above the draft by submit.py) ---
# run_cache_transceiver_precheck is the function TensorRT-LLM's draft calls once the nodes are sliced,
# before any server starts. Here it runs perfsanity's preflight (perfsanity.run.preflight): one short
# srun per role's node slice, bounded by preflight.timeout_s. A failed check is named (node and check)
# in report.json and junit.xml and ends the job: through the draft's cleanup_on_failure when it has one
# (which scancels the job), else by exit 1. perfsanity's own draft leaves this to the supervisor.
run_cache_transceiver_precheck() {
    if PYTHONPATH="$PERFSANITY_REPO${PYTHONPATH:+:$PYTHONPATH}" python3 -m perfsanity.jobs.batch \
        --job-dir "$PERFSANITY_JOB_DIR" --preflight-only -- "${srunArgs[@]}"; then
        return 0
    fi
    if declare -F cleanup_on_failure >/dev/null; then
        cleanup_on_failure "perfsanity preflight failed: see $PERFSANITY_JOB_DIR/report.json"
    fi
    exit 1
}
