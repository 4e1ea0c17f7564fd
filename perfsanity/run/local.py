"""Local executor: run every role of a job as a local process — the same role code, the same
environment launch.sh would export, the same per-role run script — with no SLURM.

Mirrors the draft launch logic: install step, one process per role, the benchmark's exit code is the
verdict, a role failing first ends the job, servers get a bounded time to stop, then are killed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from perfsanity.common.processes import ProcessSet, TermAsInterrupt
from perfsanity.common.waits import Deadline
from perfsanity.load.results_json import RunResult
from perfsanity.load.summary import format_table
from perfsanity.plan.prepare import PreparedJob
from perfsanity.run.rendezvous import Rendezvous
from perfsanity.run.triage import format_report, triage


def _say(message: str) -> None:
    print(f"[local {time.strftime('%H:%M:%S')}] {message}", flush=True)


def role_env(job: PreparedJob, role: str, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for name in ("SLURM_JOB_ID", "SLURM_JOBID", "SLURM_STEP_ID", "SLURM_PROCID", "SLURM_NODELIST",
                 "SLURM_JOB_NODELIST", "SLURM_STEP_NODELIST"):
        env.pop(name, None)
    env.update(job.env)
    env["DISAGG_SERVING_TYPE"] = role
    env["PERFSANITY_JOB_ID"] = "local"
    repo = job.env["PERFSANITY_REPO"]
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_local(job: PreparedJob) -> int:
    """Run the job here; print a results table; return the verdict (0 = passed)."""
    cfg = job.config
    logs = job.job_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    run_sh = job.env["PERFSANITY_RUN_SH"]
    _say(f"install step (bounded by timeouts.install={cfg.timeouts.install}s)")
    with TermAsInterrupt(), ProcessSet() as procs:
        try:
            inst = procs.start("install", [sys.executable, "-m", "perfsanity.run.install", "--job-dir", str(job.job_dir)],
                               env=role_env(job, "BENCHMARK"), log_path=logs / "install.log")
            _stream_until_exit(inst, Deadline(cfg.timeouts.install, "install step"))
            if inst.poll() != 0:
                _say(f"install failed (exit {inst.poll()}); last lines:\n{inst.tail(30)}")
                return 1
            role_procs = {}
            for p in job.topology.roles:
                _say(f"start {p.role}")
                role_procs[p.role] = procs.start(p.role, ["bash", run_sh], env=role_env(job, p.role),
                                                 log_path=logs / f"{p.role}.log", cwd=job.job_dir)
            verdict = _wait_for_verdict(job, role_procs)
        except KeyboardInterrupt:
            _say("interrupted; stopping every role")
            verdict = 130
        procs.stop_all(cfg.timeouts.shutdown / 2)
    return _report(job, verdict)


def _stream_until_exit(proc, deadline: Deadline) -> None:
    """Echo a process's log while it runs (install progress), bounded by ``deadline``."""
    pos = 0
    while proc.poll() is None and not deadline.expired:
        pos = _echo_new(proc.log_path, pos)
        time.sleep(0.2)
    _echo_new(proc.log_path, pos)
    if proc.poll() is None:
        _say(f"{deadline.what} exceeded {deadline.seconds}s; stopping it")
        proc.stop(5)


def _echo_new(path: Path, pos: int) -> int:
    try:
        with path.open("rb") as fh:
            fh.seek(pos)
            data = fh.read()
    except OSError:
        return pos
    if data:
        sys.stdout.write(data.decode("utf-8", errors="replace"))
        sys.stdout.flush()
    return pos + len(data)


def _wait_for_verdict(job: PreparedJob, role_procs: dict) -> int:
    cfg = job.config
    bench = role_procs["BENCHMARK"]
    deadline = Deadline(cfg.slurm.timeout, "the whole job (slurm.timeout)")
    pos = 0
    while not deadline.expired:
        pos = _echo_new(bench.log_path, pos)
        if bench.poll() is not None:
            _echo_new(bench.log_path, pos)
            _say(f"BENCHMARK finished with exit code {bench.poll()}")
            _wait_servers(job, role_procs)
            return bench.poll() or 0
        for role, proc in role_procs.items():
            if role != "BENCHMARK" and proc.poll() not in (None, 0):
                _say(f"{role} failed with exit code {proc.poll()}; giving BENCHMARK "
                     f"{cfg.timeouts.shutdown}s to record it")
                grace = Deadline(cfg.timeouts.shutdown, "benchmark to record the failure")
                while bench.poll() is None and not grace.expired:
                    time.sleep(0.2)
                _echo_new(bench.log_path, pos)
                return bench.poll() or 1
        time.sleep(0.2)
    _say(f"job exceeded slurm.timeout={cfg.slurm.timeout}s")
    return 1


def _wait_servers(job: PreparedJob, role_procs: dict) -> None:
    grace = Deadline(job.config.timeouts.shutdown, "servers to stop after the benchmark")
    while not grace.expired and any(p.poll() is None for p in role_procs.values()):
        time.sleep(0.2)
    left = [r for r, p in role_procs.items() if p.poll() is None]
    if left:
        _say(f"still running after {grace.seconds}s: {', '.join(left)}; stopping them")


def _report(job: PreparedJob, verdict: int) -> int:
    results_path = job.job_dir / "results.json"
    if results_path.exists():
        result = RunResult.read(results_path)
        if result.results:
            print("\n" + format_table(result.results))
    if verdict != 0:
        # keep the benchmark's own, more specific reason when it wrote one
        reason = ""
        status = Rendezvous(job.job_dir / "rendezvous").status()
        if status and status.get("failures"):
            reason = "; ".join(status["failures"])
        print(format_report(triage(job.job_dir, reason=reason or f"job failed (exit code {verdict})")))
    _say(f"{'PASSED' if verdict == 0 else 'FAILED'}: results {results_path}, junit {job.job_dir / 'junit.xml'}")
    return verdict
