#!/bin/bash
# Jenkins wrapper of the L0 perf flow: writes the test-list / script-prefix / srun-args files,
# calls submit.py in L0 mode, sbatches launch.sh, tracks the job (bounded, streaming its log), then
# runs the results pipeline here on the agent (history, gate, junit.xml, report: the compute nodes
# need no database credentials), and exits with the job's verdict combined with the gate's.
# Usage: run_perf_test.sh --test disagg_upload-e2e-<config> --workspace DIR [--cluster FILE] [--upload] ...
set -euo pipefail
repo=$(cd -P "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
# the project venv (synced from uv.lock on first use; nothing is installed into this agent's python3)
py=$(python3 "$repo/perfsanity/bootstrap.py" --print-python)
# launch.sh (sbatch exports this environment) and its steps run `python3`: the same venv
PATH="$(dirname "$py"):$PATH"
export PATH
exec "$py" -m perfsanity.cli.jenkins "$@"
