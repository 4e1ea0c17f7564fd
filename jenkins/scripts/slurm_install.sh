#!/bin/bash
# Per-node install step of a perfsanity job: the harness's Python deps and the backend's tools.
# Several ranks may run it at once; perfsanity.run.install serialises them on a lock with a bound.
set -euo pipefail
: "${PERFSANITY_REPO:?}" "${PERFSANITY_JOB_DIR:?}"
cd "$PERFSANITY_REPO"
export PYTHONPATH="$PERFSANITY_REPO${PYTHONPATH:+:$PYTHONPATH}"
echo "[install] node ${SLURMD_NODENAME:-$(hostname)} rank ${SLURM_PROCID:-0}"
# the harness's own dependencies: the project venv from uv.lock, made where this node lacks it
# (perfsanity/bootstrap.py: under a lock, every step bounded, log under ~/.cache/perfsanity/logs)
# (run by the supervisor's interpreter where its path exists: no version-manager shim in the way)
boot=${PERFSANITY_PYTHON:-python3}
[[ -x $boot ]] || boot=python3
py=$("$boot" "$PERFSANITY_REPO/perfsanity/bootstrap.py" --print-python)
echo "[install] harness python: $py"
exec "$py" -m perfsanity.run.install --job-dir "$PERFSANITY_JOB_DIR"
