#!/bin/bash
# Runs one role of a perfsanity job: the same pytest case on every role, told its role by
# DISAGG_SERVING_TYPE (GEN_i | CTX_i | SERVER_i | DISAGG_SERVER | BENCHMARK).
set -euo pipefail
: "${DISAGG_SERVING_TYPE:?DISAGG_SERVING_TYPE must name the role}"
: "${PERFSANITY_REPO:?}" "${PERFSANITY_TEST_ID:?}" "${PERFSANITY_JOB_DIR:?}"
cd "$PERFSANITY_REPO/tests"
export PYTHONPATH="$PERFSANITY_REPO${PYTHONPATH:+:$PYTHONPATH}"
rank=${SLURM_PROCID:-0}
# the harness venv: the supervisor names its own interpreter (the install step has synced the venv on
# every node); where that path does not exist (another container image), ask the bootstrap
py=${PERFSANITY_PYTHON:-}
[[ -x $py ]] || py=$(python3 "$PERFSANITY_REPO/perfsanity/bootstrap.py" --print-python)
# only the role's own case is collected (testcases.all_cases keeps $PERFSANITY_TEST_ID inside a job),
# and no installed plugin is loaded (hypothesis, xdist, timeout: seconds of imports on a busy node; the
# supervisor bounds the role); the ini's timeout key then has no plugin, hence the warning filter
export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1
exec "$py" -m pytest "perf/test_perf_sanity.py::test_e2e[$PERFSANITY_TEST_ID]" \
    -p no:cacheprovider -W ignore::pytest.PytestConfigWarning -q -s -rA --no-header -o console_output_style=classic \
    --junitxml="$PERFSANITY_JOB_DIR/logs/junit-$DISAGG_SERVING_TYPE-$rank.xml"
