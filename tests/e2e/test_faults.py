"""Local jobs that fail on purpose: each failure is bounded in time and names what failed (the role,
with its log tail, or what was awaited) in stdout, results.json, report.json and junit.xml. The
``jobs`` fixture checks afterwards that none of the job's processes survived.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from junitparser import Error, Failure, JUnitXml


def failed_cases(junit_path) -> dict[str, tuple[str, str]]:
    """testcase name -> (failure message, failure text) for every failed/errored testcase."""
    out = {}
    for suite in JUnitXml.fromfile(str(junit_path)):
        for case in suite:
            for r in case.result:
                if isinstance(r, (Failure, Error)):
                    out[case.name] = (r.message or "", r.text or "")
    return out


@pytest.mark.slow
def test_gen_worker_that_exits_at_start_fails_the_job_fast_naming_gen_0(jobs):
    # the mocker's argparse rejects the unknown flag (submit lets it through, as listed unchecked): GEN_0's
    # server exits with code 2 at once
    run = jobs.run("benchmark.concurrency_list=1", "worker_config.gen.no_such_mocker_option=1",
                   "metadata.engine_keys_unchecked=[no_such_mocker_option]", timeout_s=120)
    assert run.returncode != 0, run.stdout[-4000:]
    assert run.elapsed_s < 30, f"took {run.elapsed_s:.1f}s to fail"
    rejected = "unrecognized arguments: --no-such-mocker-option 1"
    assert "FAILED GEN_0: GEN_0 server exited with code 2 while starting" in run.stdout, run.stdout[-4000:]
    assert rejected in run.stdout

    report = run.json("report.json")
    assert report["failed_role"] == "GEN_0", report["failures"]
    assert [f["role"] for f in report["failures"]] == ["GEN_0"]  # no cascade reported as its own failure
    assert rejected in report["failures"][0]["log_tail"]
    assert report["error_signature"] == "process-exit"

    res = run.json("results.json")
    assert (res["status"], res["results"]) == ("failed", [])
    assert res["failures"] == ["GEN_0: GEN_0 server exited with code 2 while starting"]

    failed = failed_cases(run.out / "junit.xml")
    assert sorted(failed) == ["GEN_0"], failed
    message, text = failed["GEN_0"]
    assert "GEN_0 server exited with code 2" in message and rejected in text


@pytest.mark.slow
def test_router_that_never_serves_the_model_fails_naming_what_was_awaited(jobs):
    # the frontend waits for 99 workers before it registers the model: /health answers, but every
    # completion is a 404 until timeouts.router_ready runs out
    run = jobs.run("benchmark.concurrency_list=1", "timeouts.router_ready=10",
                   "environment.server_env_var=DYN_LOG=info DYN_ROUTER_MIN_INITIAL_WORKERS=99", timeout_s=180)
    assert run.returncode != 0, run.stdout[-4000:]
    assert run.elapsed_s < 75, f"took {run.elapsed_s:.1f}s to fail"
    awaited = "waited 10s for a 1-token completion from http://127.0.0.1:"
    assert awaited in run.stdout and "(model 'tiny-mocker') to return 200" in run.stdout, run.stdout[-4000:]
    assert "last answer: HTTP 404" in run.stdout

    res = run.json("results.json")
    assert res["status"] == "failed" and res["results"] == []
    [failure] = res["failures"]
    assert failure.startswith(awaited) and failure.endswith("last answer: HTTP 404")
    status = run.json("rendezvous/benchmark.status")
    assert status["status"] == "failed" and 10 <= status["elapsed_s"] < 60, status

    report = run.json("report.json")
    assert (report["failed_role"], report["failures"], report["error_signature"]) == ("BENCHMARK", [], "timeout")

    failed = failed_cases(run.out / "junit.xml")
    assert sorted(failed) == ["BENCHMARK"], failed
    assert failed["BENCHMARK"][0].startswith(awaited)


def _aiperf_of(jobs, e2e, job, conc: int) -> int | None:
    """PID of the aiperf process the job runs for ``conc`` (the parent, not its workers)."""
    artifact_dir = str(job.out / "client" / f"c{conc}")
    found = []
    for pid in e2e.processes_of(jobs.marker, job.out):
        argv = e2e.cmdline(pid)
        if "profile" in argv and artifact_dir in argv and any(a.endswith("/aiperf") for a in argv):
            found.append(pid)
    roots = [p for p in found if _ppid(p) not in found]
    return roots[0] if roots else None


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


@pytest.mark.slow
def test_client_killed_mid_run_fails_the_job_and_keeps_finished_results(jobs, e2e):
    job = jobs.start("benchmark.concurrency_list=1 2")
    results = job.out / "results.json"
    deadline = time.monotonic() + 240
    killed = None
    while killed is None and time.monotonic() < deadline and job.proc.poll() is None:
        done = json.loads(results.read_text())["results"] if results.exists() else []
        if [r["concurrency"] for r in done] == [1]:
            pid = _aiperf_of(jobs, e2e, job, 2)
            if pid is not None:
                assert e2e.alive(pid)
                os.kill(pid, signal.SIGKILL)  # started by this test's job (matched by its marker)
                killed = pid
        time.sleep(0.1)
    assert killed, f"never saw concurrency 1's results and a running aiperf for concurrency 2:\n{job.output()[-4000:]}"
    run = job.wait(120)
    assert run.returncode != 0, run.stdout[-4000:]
    why = "aiperf at concurrency 2 exited with code -9"
    assert why in run.stdout

    res = run.json("results.json")
    assert res["status"] == "failed" and res["failures"] == [f"{why} (log {run.out}/logs/client-c2.log)"], res["failures"]
    [c1] = res["results"]
    assert (c1["concurrency"], c1["requested"], c1["completed"], c1["failed"]) == (1, 2, 2, 0)
    assert c1["output_token_throughput"] > 0 and (c1["ttft"]["median"] or c1["ttft"]["p90"]) > 0

    report = run.json("report.json")
    assert (report["failed_role"], report["error_signature"]) == ("BENCHMARK", "process-exit")
    failed = failed_cases(run.out / "junit.xml")
    assert sorted(failed) == ["BENCHMARK"] and failed["BENCHMARK"][0].startswith(why), failed
