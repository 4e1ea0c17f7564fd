"""Local executor: run every role of a job as a local process — the same role code, the same
environment launch.sh would export, the same per-role run script — with no SLURM.

:func:`run_local` = the supervisor (:mod:`perfsanity.run.supervisor`, the rules the SLURM batch job
follows too) with local processes (:class:`~perfsanity.run.spawners.LocalSpawner`; the install log
and the BENCHMARK log stream to the terminal), then the submit-side results pipeline
(:func:`perfsanity.results.pipeline.finalize`), then the results table and the verdict line. Tool venvs
this machine lacks are built first (:func:`build_tools`), outside the job's own time bound.
"""

from __future__ import annotations

import os
import time

from perfsanity.load.results_json import RunResult
from perfsanity.load.summary import format_table
from perfsanity.plan.prepare import PreparedJob
from perfsanity.run.benchmark import ENV_LAUNCHER_PID
from perfsanity.run.install import ensure_tools, job_tools
from perfsanity.run.rendezvous import Rendezvous
from perfsanity.run.spawners import LocalSpawner
from perfsanity.run.supervisor import RunContext
from perfsanity.run.supervisor import run as supervise
from perfsanity.run.triage import format_report, triage

LABEL = "local"


def _say(message: str) -> None:
    print(f"[{LABEL} {time.strftime('%H:%M:%S')}] {message}", flush=True)


def local_context(job: PreparedJob) -> RunContext:
    # TERM is an interrupt here (130), as a local sweep expects; the triage is printed once, at the end
    return RunContext.from_config(job.config, job.topology, job.job_dir, test_id=job.test_id, job_id="local",
                                  label=LABEL, term_exit=130, print_triage=False)


def build_tools(job: PreparedJob) -> None:
    """The tool venvs the job needs, built before the job's clock starts when this machine lacks one: here
    they are the machine's set-up, kept for every later job, not the job's time (``slurm.timeout`` bounds
    the job as an allocation would). Each build is bounded by the tool install timeout."""
    from perfsanity.engines.tooling import installed_tool

    missing = [tool for tool in job_tools(job.config) if installed_tool(tool) is None]
    if missing:
        _say(f"first use on this machine: building {', '.join(missing)} (not counted in slurm.timeout)")
        ensure_tools(job.config, _say)


def run_local(job: PreparedJob) -> int:
    """Run the job here; print a results table; return the job's exit code (0 = passed)."""
    build_tools(job)
    env = {**job.env, ENV_LAUNCHER_PID: str(os.getpid())}  # a manual job's endpoint.json names it as the stop
    verdict = supervise(local_context(job), LocalSpawner(job.job_dir, env))
    from perfsanity.results.pipeline import finalize  # after the job: its imports (SciPy, SQLAlchemy) are seconds

    verdict = finalize(job.job_dir, job_exit_code=verdict)
    return _report(job, verdict)


def _report(job: PreparedJob, verdict: int) -> int:
    results_path = job.job_dir / "results.json"
    why: list[str] = []
    if results_path.exists():
        result = RunResult.read(results_path)
        if result.results:
            print("\n" + format_table(result.results))
        why = [a.verdict_text() for a in result.accuracy if not a.passed]
    if verdict != 0:
        # keep the benchmark's own, more specific reason when it wrote one
        status = Rendezvous(job.job_dir / "rendezvous").status()
        if status and status.get("failures"):
            why = [*status["failures"], *why]
        print(format_report(triage(job.job_dir, reason="; ".join(why) or f"job failed (exit code {verdict})")))
    _say(f"{'PASSED' if verdict == 0 else 'FAILED'}: results {results_path}, junit {job.job_dir / 'junit.xml'}")
    return verdict
