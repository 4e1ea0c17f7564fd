"""After the benchmark: gate the results against history, then junit.xml (role failures + one
testcase per gated metric), report.html and report.json (triage) for Jenkins and people.

Environment: ``PERFSANITY_PRE_MERGE=1`` gates with pre-merge thresholds (a regression fails the
test); ``PERFSANITY_RUN_CI=1`` (submit.py --run-ci) records the run as post-merge history, which is
what baselines are built from; ``PERFSANITY_HISTORY`` picks the history database.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from perfsanity.common.errors import PerfsanityError
from perfsanity.load.results_json import RunResult
from perfsanity.results.junit import write_junit
from perfsanity.run.rendezvous import Rendezvous
from perfsanity.run.triage import triage


def role_failures(job_dir: Path, result: RunResult) -> list[tuple[str, str, str]]:
    """Failures as (name, message, details): roles that reported one, then the benchmark's own."""
    out = []
    reported = Rendezvous(job_dir / "rendezvous").failures()
    for f in reported:
        out.append((f["role"], f["message"], f.get("log_tail", "")))
    named = {f["role"] for f in reported}
    for msg in result.failures:
        role = msg.split(":", 1)[0]
        if role not in named:
            out.append(("BENCHMARK", msg, ""))
    return out


def finalize_job(job_dir: Path, result: RunResult, environ: dict[str, str] | None = None) -> bool:
    """Write junit.xml, report.html and report.json. Returns False when the gate failed the run."""
    env = dict(os.environ if environ is None else environ)
    failures = role_failures(job_dir, result)
    report = None
    gate_ok = True
    if result.results:
        from perfsanity.results.gate import Verdict
        from perfsanity.results.gating import gate_job

        log = io.StringIO()
        try:
            report = gate_job(job_dir, pre_merge=env.get("PERFSANITY_PRE_MERGE") == "1",
                              post_merge=env.get("PERFSANITY_RUN_CI") == "1", out=log,
                              upload=env.get("PERFSANITY_RUN_CI") == "1")
            gate_ok = report.verdict is not Verdict.FAIL
        except PerfsanityError as exc:
            failures.append(("GATE", f"the regression gate could not run: {exc}", log.getvalue()))
        print(log.getvalue(), end="", flush=True)
    write_junit(job_dir / "junit.xml", config_name=result.config_name, report=report, role_failures=failures)
    try:
        from perfsanity.results.report.job import write_job_report

        write_job_report(job_dir)
    except (PerfsanityError, OSError, ValueError) as exc:
        print(f"warning: report.html not written: {exc}", flush=True)
    triage(job_dir, reason="; ".join(f[1] for f in failures) if failures else "")
    return gate_ok


def ensure_junit(job_dir: Path, config_name: str, *, reason: str, failed: bool) -> Path:
    """Make sure Jenkins finds a junit file: a job killed before its benchmark wrote one (timeout,
    scancel, node failure) gets one failure testcase with the triage's evidence."""
    path = job_dir / "junit.xml"
    if not path.exists():
        report = triage(job_dir, reason=reason)
        details = "\n".join(f"--- {name} ---\n{text}" for name, text in report["log_tails"].items() if text)
        failed_role = report.get("failed_role") or "JOB"
        write_junit(path, config_name=config_name, role_failures=[(failed_role, reason, details)])
    return path


def finalize(job_dir: Path, *, job_exit_code: int, reason: str = "",
             environ: dict[str, str] | None = None) -> int:
    """The submit side's results pipeline for a finished (or killed) job: record → gate → junit →
    report → upload. Returns the job's final exit code (0 = passed).

    Interface shared by every launcher (local executor, ``submit.py --wait``, Jenkins ``collect``).
    """
    config_name = job_dir.name
    ensure_junit(job_dir, config_name, reason=reason or f"job failed (exit code {job_exit_code})",
                 failed=job_exit_code != 0)
    return job_exit_code
