"""``submit.py --submit``: sbatch a prepared job, record ``jobid.json``, optionally wait for it."""

from __future__ import annotations

import json
import time

from perfsanity.common.files import write_atomic
from perfsanity.jobs.slurm import JobInfo, job_state, submit, wait_for_job
from perfsanity.plan.prepare import PreparedJob
from perfsanity.run.context import parse_hostlist

# margin on top of slurm.timeout for queueing and teardown when waiting for a job
WAIT_MARGIN_S = 300


def write_jobid(job: PreparedJob, job_id: str, info: JobInfo | None = None) -> None:
    data = {**job.job_info(), "job_id": job_id, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:  # updating the same job's record (its final state): keep when it was created and submitted
        old = json.loads((job.job_dir / "jobid.json").read_text())
        if str(old.get("job_id")) == job_id:
            data.update({k: old[k] for k in ("created", "submitted", "harness_commit") if k in old})
    except (OSError, ValueError, AttributeError):
        pass
    if info is not None:
        data["state"] = info.state
        data["exit_code"] = info.exit_code
        data["nodelist"] = info.nodelist
        hosts = parse_hostlist(info.nodelist) if info.nodelist else []
        if hosts:
            data["role_hosts"] = {p.role: [hosts[n] for n in p.nodes if n < len(hosts)] for p in job.topology.roles}
    write_atomic(job.job_dir / "jobid.json", json.dumps(data, indent=2) + "\n")


def submit_job(job: PreparedJob, *, wait: bool = False) -> int:
    """sbatch launch.sh from the job dir; with ``wait`` stream its log and return its verdict."""
    job_id = submit(job.launch_path, workdir=job.job_dir)
    write_jobid(job, job_id)
    print(f"submitted job {job_id}; log {job.job_dir / f'slurm-{job_id}.out'}", flush=True)
    if not wait:
        return 0
    info = wait_for_job(job_id, timeout_s=job.config.slurm.timeout + WAIT_MARGIN_S, poll_s=1.0,
                        stream_log=job.job_dir / f"slurm-{job_id}.out")
    try:
        info = job_state(job_id)
    except Exception:  # noqa: BLE001 - keep the info we have
        pass
    write_jobid(job, job_id, info)
    print(f"job {job_id}: {info.state} (exit code {info.exit_code})", flush=True)
    return 0 if info.succeeded else 1
