# shellcheck shell=bash
# --- perfsanity draft launch logic (appended to launch.sh by submit.py) ---
# Glue: the job is run by perfsanity's supervisor (perfsanity.jobs.batch -> perfsanity.run.supervisor):
# requeue move-aside, allocation check, install step, one srun step per role, the benchmark's verdict,
# the slurm.timeout deadline, bounded shutdown and SIGTERM/SIGINT triage. It builds the role plan from
# the job's config and topology (the arrays above are for readers); srunArgs are passed on to every step.
set -uo pipefail
export PYTHONPATH="$PERFSANITY_REPO${PYTHONPATH:+:$PYTHONPATH}"
export PERFSANITY_JOB_ID="${SLURM_JOB_ID:-local}"
cd "$PERFSANITY_JOB_DIR" || exit 1
# the harness venv's interpreter (made on this node if it lacks it), not whatever python3 is on PATH
py=$(python3 "$PERFSANITY_REPO/perfsanity/bootstrap.py" --print-python) || exit 1
exec "$py" -m perfsanity.jobs.batch --job-dir "$PERFSANITY_JOB_DIR" -- "${srunArgs[@]}"
