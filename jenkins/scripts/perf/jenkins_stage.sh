#!/bin/bash
# One Jenkinsfile stage for every test in $TEST_LIST (one test id per line): runs
# run_perf_test.sh --stage <stage> with a workspace per test under perf-ws/. Exits non-zero if any
# test's stage failed (the track stage keeps going so every job is followed to its end). The collect
# stage runs the results pipeline on this agent: history, gate, junit.xml and report per test.
set -uo pipefail
stage=${1:?usage: jenkins_stage.sh validate|submit|track|collect}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
extra=()
[[ -n ${CLUSTER_FILE:-} ]] && extra+=(--cluster "$CLUSTER_FILE")
[[ ${UPLOAD:-false} == true ]] && extra+=(--upload)
rc=0
while read -r test; do
    [[ -z $test || $test == \#* ]] && continue
    bash "$here/run_perf_test.sh" --stage "$stage" --test "$test" --workspace "perf-ws/$test" "${extra[@]}" || rc=1
done <<< "${TEST_LIST:-}"
exit "$rc"
