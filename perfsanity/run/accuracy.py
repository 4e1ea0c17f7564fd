"""The accuracy step of the BENCHMARK role (``accuracy.enable_accuracy_test``): after the perf points,
lm-eval (:mod:`perfsanity.load.lm_eval`) runs once against the same front door, bounded by
``accuracy.timeout_s``. Its scores go to ``results.json`` (``accuracy``); they are judged against
``accuracy.threshold`` on the submit side (:mod:`perfsanity.results.pipeline`), so a low score never
makes the perf measurement invalid. A failed or timed-out lm-eval is recorded as the task's error.
"""

from __future__ import annotations

import time
from pathlib import Path

from perfsanity.common.errors import PerfsanityError, WaitTimeout
from perfsanity.common.processes import ProcessSet
from perfsanity.common.waits import wait_until
from perfsanity.load import lm_eval
from perfsanity.load.results_json import AccuracyResult
from perfsanity.plan.launch import repo_path
from perfsanity.run.job import Job, resolve_argv
from perfsanity.spec import envvars

LOG_NAME = "accuracy-lm-eval.log"


def task_dir(job: Job) -> Path | None:
    """``accuracy.task_dir`` as an absolute path (a relative one is relative to the repo)."""
    raw = job.config.accuracy.task_dir
    return None if raw is None else repo_path(raw)


def _failed(job: Job, error: str, started: float) -> tuple[AccuracyResult, ...]:
    acc = job.config.accuracy
    return tuple(AccuracyResult(task=t, metric=acc.metric, threshold=acc.threshold, error=error,
                                started_at=started, ended_at=time.time()) for t in acc.task_names)


def run_accuracy(job: Job, url: str, model: str) -> tuple[AccuracyResult, ...]:
    """Run lm-eval over every task of ``accuracy.tasks``; never raises for lm-eval's own failures."""
    acc = job.config.accuracy
    out_dir = job.job_dir / lm_eval.OUT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = task_dir(job)
    run = lm_eval.AccuracyRun(url=url, model_name=model, out_dir=out_dir, task_dir=tasks)
    cmd = lm_eval.command(acc, run)
    log = job.job_dir / "logs" / LOG_NAME
    started = time.time()
    try:
        argv = resolve_argv(cmd.argv, cmd.tool)
        env = envvars.apply(acc.env_var, job.environ)
        env.update(cmd.env_set)
        job.log(f"accuracy: lm-eval {acc.tasks} against {url}; {' '.join(argv)}")
        with ProcessSet() as procs:
            proc = procs.start(f"lm-eval {acc.tasks}", argv, env=env, log_path=log, cwd=tasks or out_dir)

            def finished() -> bool:
                job.rendezvous.raise_if_failed()
                return proc.poll() is not None

            try:
                wait_until(finished, timeout_s=acc.timeout_s, poll_s=0.2, max_poll_s=1.0,
                           what=f"lm-eval ({acc.tasks}) to finish (accuracy.timeout_s)")
            except WaitTimeout as exc:
                return _failed(job, f"{exc} (log {log})", started)
            if proc.poll() != 0:
                last = (proc.tail(5).strip().splitlines() or [""])[-1]
                return _failed(job, f"lm-eval exited with code {proc.poll()} (log {log}): {last}", started)
        results = lm_eval.parse(acc, out_dir)
    except PerfsanityError as exc:
        if job.rendezvous.failures():
            raise  # another role failed: that is the job's story, not the accuracy step's
        return _failed(job, str(exc).splitlines()[0], started)
    ended = time.time()
    out = tuple(r.model_copy(update={"started_at": started, "ended_at": ended}) for r in results)
    for r in out:
        job.log(r.verdict_text())
    return out
