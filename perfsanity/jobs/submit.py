"""``submit.py --submit``: sbatch a prepared job, record ``jobid.json``, optionally wait for it; and
the submit side's end of a job: :func:`collect_job` (``perfsanity collect DIR``) and ``--wait`` run the
results pipeline (:func:`perfsanity.results.pipeline.finalize`) once the job has ended.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

from perfsanity.common.errors import PerfsanityError
from perfsanity.common.files import write_atomic
from perfsanity.jobs.slurm import TERMINAL_STATES, JobInfo, JobNotFound, job_state, submit, wait_for_job
from perfsanity.plan.prepare import PreparedJob
from perfsanity.run.context import parse_hostlist
from perfsanity.run.rendezvous import Rendezvous

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
        data["exit_signal"] = info.exit_signal
        data["nodelist"] = info.nodelist
        hosts = parse_hostlist(info.nodelist) if info.nodelist else []
        if hosts:
            data["role_hosts"] = {p.role: [hosts[n] for n in p.nodes if n < len(hosts)] for p in job.topology.roles}
    write_atomic(job.job_dir / "jobid.json", json.dumps(data, indent=2) + "\n")


def submit_job(job: PreparedJob, *, wait: bool = False) -> int:
    """sbatch launch.sh from the job dir; with ``wait`` stream its log, then run the results pipeline
    and return the final verdict (the job's, combined with the gate's)."""
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
    return finalize_slurm_job(job.job_dir, info)


def ended_reason(job_id: str, state: str, exit_code: int | None, exit_signal: int | None = None) -> str:
    """Why a SLURM job ended, when its exit code does not say it (cancelled, time limit, node failure,
    out of memory...); "" for COMPLETED and FAILED, whose roles and benchmark tell their own story."""
    if state in ("COMPLETED", "FAILED"):
        return ""
    how = f"exit code {exit_code}" if exit_code is not None else "exit code unknown"
    if exit_signal:
        how += f", signal {exit_signal}"
    return f"SLURM job {job_id} ended {state} ({how})"


def finalize_slurm_job(job_dir: Path, info: JobInfo, environ: Mapping[str, str] | None = None) -> int:
    """The results pipeline for a SLURM job that has ended; returns its final exit code."""
    from perfsanity.results import pipeline  # the gate's numpy/SQLAlchemy: only once a job has ended

    code = 0 if info.succeeded else 1
    return pipeline.finalize(job_dir, job_exit_code=code, environ=environ,
                             reason=ended_reason(info.job_id, info.state, info.exit_code, info.exit_signal))


def collect_job(job_dir: Path, environ: Mapping[str, str] | None = None) -> int:
    """``perfsanity collect DIR``: run the results pipeline of a job that has ended (submitted without
    ``--wait``, or to redo it; running it again records nothing twice). SLURM jobs (``jobid.json``) are
    asked for their final state; a local job dir is judged by its benchmark's status."""
    from perfsanity.results import pipeline

    path = job_dir / "jobid.json"
    try:
        recorded = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError) as exc:
        raise PerfsanityError(f"{path}: not readable JSON: {exc}") from None
    job_id = str(recorded.get("job_id") or "")

    def by_benchmark_status(reason: str = "") -> int:
        status = Rendezvous(job_dir / "rendezvous").status() or {}
        if not status and not (job_dir / pipeline.RESULTS_FILE).exists():
            raise PerfsanityError(f"{job_dir}: neither jobid.json nor results.json nor a benchmark status: "
                                  "the job never ran (or this is not a job directory)")
        code = 0 if status.get("status") == "passed" else 1
        return pipeline.finalize(job_dir, job_exit_code=code, reason=reason if code else "", environ=environ)

    if not job_id.isdigit():  # a local job (or one never submitted): its benchmark status is the verdict
        return by_benchmark_status()
    if recorded.get("state") in TERMINAL_STATES:
        info = JobInfo(job_id=job_id, state=recorded["state"], exit_code=recorded.get("exit_code"),
                       exit_signal=recorded.get("exit_signal"), nodelist=recorded.get("nodelist") or "")
    else:
        try:
            info = job_state(job_id)
        except JobNotFound:  # SLURM has forgotten the job (MinJobAge, no accounting)
            print(f"job {job_id}: unknown to SLURM now; judged by its benchmark status", flush=True)
            return by_benchmark_status(f"SLURM job {job_id} ended in an unknown state (no longer known to SLURM)")
        if not info.finished:
            raise PerfsanityError(f"job {job_id} is {info.state}: collect it once it has ended "
                                  "(or submit with --wait)")
        recorded.update(state=info.state, exit_code=info.exit_code, exit_signal=info.exit_signal,
                        nodelist=info.nodelist)
        write_atomic(path, json.dumps(recorded, indent=2) + "\n")
    print(f"job {job_id}: {info.state} (exit code {info.exit_code})", flush=True)
    return finalize_slurm_job(job_dir, info, environ)
