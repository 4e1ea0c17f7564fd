"""The results pipeline of a finished (or killed) job, run on the submit side: record → gate → junit →
report → upload → triage, from what is in the job dir only.

Contract:

* Input: the job dir — ``results.json`` (whatever concurrencies finished; possibly none), the
  rendezvous failures (``rendezvous/*.failed``, ``benchmark.status``), role logs, ``job_meta.json``
  (history match keys) and ``job.json``'s ``pipeline`` settings (pre-merge / post-merge / upload,
  fixed at prepare time by :func:`perfsanity.plan.prepare.pipeline_settings`), plus the job's own
  exit code and, when the launcher knows it, why the job ended (``reason``: "SLURM job 12 ended
  CANCELLED").
* Output: ``gate.json`` + ``gate_junit.xml`` + history records (via :func:`gate_job`, when any
  concurrency finished), ``junit.xml`` (gate testcases + one failing testcase per role failure, and
  a ``JOB`` testcase naming why the job ended when nothing else does, or when the launcher gave a
  reason, and one ``accuracy.<task>`` testcase per accuracy task), ``report.html``, ``report.json`` (triage) and ``finalized.json`` (what this function
  returned).
* Return: the final exit code — the job's own (non-zero: not a valid measurement) combined with the
  gate's verdict (a pre-merge regression makes it 1) and the accuracy step's (a task below
  ``accuracy.threshold``, or without a score, makes it 1; the perf points stay valid).
* Idempotent: it may run again (``perfsanity collect DIR`` after ``submit.py --wait``, or an L0 job
  that finalised in the allocation): outputs are rewritten, history is never recorded twice
  (``history_records.json``), so nothing is uploaded twice.
* The environment (``environ``, default ``os.environ``) is the submit side's: it names the history
  (``PERFSANITY_HISTORY``) and the upload target; it supplies the pipeline settings only for a job dir
  prepared before job.json carried them.

Callers: ``submit.py --wait`` (:func:`perfsanity.jobs.submit.submit_job`), ``perfsanity collect DIR``,
the Jenkins ``collect`` stage, sweeps (each point as it ends) and the local executor.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from perfsanity.common.errors import ConfigError, PerfsanityError
from perfsanity.common.files import write_atomic
from perfsanity.load.results_json import RunResult
from perfsanity.results.junit import RoleFailure, write_junit
from perfsanity.run.rendezvous import Rendezvous
from perfsanity.run.triage import triage

JOB_FILE = "job.json"
RESULTS_FILE = "results.json"
JUNIT_FILE = "junit.xml"
FINAL_FILE = "finalized.json"
ENV_HISTORY = "PERFSANITY_HISTORY"


@dataclass(frozen=True)
class Settings:
    """How the pipeline treats one job (job.json ``pipeline``)."""

    pre_merge: bool = False  # pre-merge thresholds; a regression fails the job
    post_merge: bool = False  # history records are post-merge (baseline material)
    upload: bool = False  # upload the records when an upload target is configured


def read_settings(job_dir: Path, environ: Mapping[str, str]) -> Settings:
    """``job.json``'s ``pipeline`` block; ``environ`` only for a job dir prepared without one."""
    from perfsanity.plan.prepare import pipeline_settings

    path = job_dir / JOB_FILE
    data = None
    if path.exists():
        try:
            data = json.loads(path.read_text()).get("pipeline")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
            raise ConfigError(str(path), "", f"not a readable job.json: {exc}") from None
    if data is None:
        data = pipeline_settings(environ)
    if not isinstance(data, dict):
        raise ConfigError(str(path), "pipeline", f"must be a mapping, got {data!r}")
    out = {}
    for name in ("pre_merge", "post_merge", "upload"):
        value = data.get(name, False)
        if not isinstance(value, bool):
            raise ConfigError(str(path), f"pipeline.{name}", f"must be true or false, got {value!r}")
        out[name] = value
    return Settings(**out)


def role_failures(job_dir: Path, result: RunResult | None) -> list[RoleFailure]:
    """Failures as (name, message, details): roles that reported one, then the benchmark's own."""
    out = []
    reported = Rendezvous(job_dir / "rendezvous").failures()
    for f in reported:
        out.append((f["role"], f["message"], f.get("log_tail", "")))
    named = {f["role"] for f in reported}
    for msg in result.failures if result is not None else ():
        role = msg.split(":", 1)[0]
        if role not in named:
            out.append(("BENCHMARK", msg, ""))
    return out


def read_final(job_dir: Path) -> dict | None:
    """What the last :func:`finalize` of this job dir returned (``finalized.json``), or None."""
    try:
        data = json.loads((job_dir / FINAL_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("exit_code"), int) else None


def _read_run(job_dir: Path) -> tuple[RunResult | None, str]:
    """results.json, or None and why not."""
    path = job_dir / RESULTS_FILE
    if not path.exists():
        return None, f"{path} is missing: the benchmark wrote no results (is the job dir shared with this host?)"
    from perfsanity.results.report.job import read_results

    try:
        return read_results(path), ""
    except PerfsanityError as exc:
        return None, f"results.json is unreadable: {exc}"


def _details(report: dict) -> str:
    return "\n".join(f"--- {name} ---\n{text}" for name, text in report["log_tails"].items() if text)


def stopped_reason(job_dir: Path) -> str:
    """Why a manual job ended (``stopped by user (SIGTERM)``, the time limit), from its benchmark.status;
    "" for any other job."""
    status = Rendezvous(job_dir / "rendezvous").status() or {}
    return str(status.get("reason") or "") if status.get("status") == "stopped" else ""


def finalize(job_dir: Path, *, job_exit_code: int, reason: str = "",
             environ: Mapping[str, str] | None = None) -> int:
    """The submit side's results pipeline for a finished (or killed) job: record → gate → junit →
    report → upload → triage. Returns the job's final exit code (0 = passed).

    Interface shared by every launcher (local executor, ``submit.py --wait``, Jenkins ``collect``,
    sweeps, ``perfsanity collect``). ``reason``: why the job ended, when the launcher knows more than
    its exit code (a cancel, a time limit, a node failure); it becomes a failing ``JOB`` testcase.
    """
    from perfsanity.results.gate import Verdict
    from perfsanity.results.gating import gate_job

    job_dir = Path(job_dir)
    env = os.environ if environ is None else environ
    settings = read_settings(job_dir, env)
    run, missing = _read_run(job_dir)
    failures = role_failures(job_dir, run)
    config_name = run.config_name if run is not None else _config_name(job_dir)
    bad_results = ""
    if job_exit_code == 0 and run is None:
        bad_results = missing
    elif job_exit_code == 0 and run is not None and run.status != "passed":
        bad_results = f"the job exited 0 but results.json says status {run.status!r}"
    if bad_results:
        failures.append(("BENCHMARK", bad_results, ""))

    report = None
    if run is not None and run.results:
        gated = run
        if job_exit_code != 0 or bad_results:
            # a failed or killed job: its finished concurrencies are recorded as invalid, saying why
            why = reason or bad_results or ("" if run.failures else f"job failed (exit code {job_exit_code})")
            gated = run.model_copy(update={"status": "failed", "failures": run.failures + ((why,) if why else ())})
        log = io.StringIO()
        try:
            report = gate_job(job_dir, run=gated, pre_merge=settings.pre_merge, post_merge=settings.post_merge,
                              upload=settings.upload, history=env.get(ENV_HISTORY) or None, environ=env, out=log)
        except PerfsanityError as exc:
            failures.append(("GATE", f"the regression gate could not run: {exc}", log.getvalue()))
        print(log.getvalue(), end="", flush=True)
    gate_failed = report is not None and report.verdict is Verdict.FAIL

    if job_exit_code != 0 and (reason or not (failures or gate_failed)):
        why = reason or f"job failed (exit code {job_exit_code})"
        found = triage(job_dir, reason=why)
        name = "JOB" if reason or not found.get("failed_role") else found["failed_role"]
        failures.append((name, why, _details(found)))
    accuracy = run.accuracy if run is not None else ()
    accuracy_failed = [a for a in accuracy if not a.passed]
    for a in accuracy:
        print(("" if a.passed else "FAILED: ") + a.verdict_text(), flush=True)
    write_junit(job_dir / JUNIT_FILE, config_name=config_name, report=report, role_failures=failures,
                accuracy=accuracy)
    try:
        from perfsanity.results.report.job import write_job_report

        if run is not None:
            write_job_report(job_dir)
    except (PerfsanityError, OSError, ValueError) as exc:
        print(f"warning: report.html not written: {exc}", flush=True)
    why = [f[1] for f in failures] + [a.verdict_text() for a in accuracy_failed]
    triage(job_dir, reason="; ".join(why) if why else stopped_reason(job_dir))

    exit_code = job_exit_code or (1 if gate_failed or bad_results or accuracy_failed else 0)
    final = {"exit_code": exit_code, "job_exit_code": job_exit_code, "reason": reason,
             "gate_verdict": report.verdict.value if report is not None else None,
             "failures": [f[0] for f in failures] + [f"accuracy.{a.task}" for a in accuracy_failed],
             "accuracy": [{"task": a.task, "metric": a.metric, "score": a.score, "threshold": a.threshold,
                           "passed": a.passed, "verdict": a.verdict_text()} for a in accuracy],
             "settings": asdict(settings),
             "finalized": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    write_atomic(job_dir / FINAL_FILE, json.dumps(final, indent=2) + "\n")
    return exit_code


def _config_name(job_dir: Path) -> str:
    try:
        return str(json.loads((job_dir / JOB_FILE).read_text())["config_name"])
    except (OSError, ValueError, KeyError, TypeError):
        return job_dir.name
