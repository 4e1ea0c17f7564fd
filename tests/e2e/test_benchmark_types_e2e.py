"""benchmark.type on the local mocker (``submit.py --local``, real Dynamo + aiperf processes): a
request-rate job and an ISL/OSL job record one result per point, each in history under its own key;
a manual job serves until SIGTERM and then leaves nothing.

Not here: the trace job. aiperf 0.13.0 builds a mooncake trace's prompts in a process pool whose
workers run with HF_HUB_OFFLINE=1 and then fail to load a local tokenizer directory (HFValidationError);
its builtin tokenizer downloads its encoding at start. Until that is solved the trace type is checked
by its command line and config tests only (tests/unit/test_benchmark_types.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from perfsanity.results.history import HistoryStore

REPO = Path(__file__).resolve().parents[2]
PERF = REPO / "test_configs/disagg/perf"


def _history_points(jobs) -> dict[str, object]:
    with HistoryStore(str(jobs.tmp_path / "history.sqlite")) as store:
        return {r.keys.point: r for r in store.query({}, valid_only=False)}  # a busy node marks points saturated


def _check_points(run, want: dict[str, dict[str, object]], jobs) -> None:
    assert run.returncode == 0, run.stdout[-4000:]
    results = run.json("results.json")
    assert results["status"] == "passed", results["failures"]
    rows = {r["point"]: r for r in results["results"]}
    assert sorted(rows) == sorted(want), rows.keys()
    for label, fields in want.items():
        row = rows[label]
        assert {k: row[k] for k in fields} == fields, row
        assert row["completed"] == row["requested"] > 0 and row["failed"] == 0
    history = _history_points(jobs)
    assert sorted(history) == sorted(want)  # one record per point, each under its own key
    for label, fields in want.items():
        keys = history[label].keys
        assert keys.benchmark_type == fields["benchmark_type"]
        if "isl" in fields:
            assert (keys.isl, keys.osl) == (fields["isl"], fields["osl"])
    junit = (run.out / "junit.xml").read_text()
    html = (run.out / "report.html").read_text()
    for label in want:
        assert f'name="{label}.output_token_throughput"' in junit, junit[:2000]
        assert label in html


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_request_rate_job_records_one_point_per_rate(jobs) -> None:
    run = jobs.run(config=PERF / "mocker-ctx1-gen1-rate.yaml", timeout_s=400, name="rate")
    _check_points(run, {
        "rps4.c4": {"benchmark_type": "request_rate", "request_rate": 4.0, "arrival": "constant", "concurrency": 4},
        "rps8.c4": {"benchmark_type": "request_rate", "request_rate": 8.0, "arrival": "constant", "concurrency": 4},
    }, jobs)
    log = (run.out / "logs/client-rps4.c4.log").read_text()
    assert "--request-rate 4 --arrival-pattern constant" in (run.stdout + log)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_isl_osl_job_records_one_point_per_pair(jobs) -> None:
    run = jobs.run(config=PERF / "mocker-ctx1-gen1-isl2.yaml", timeout_s=400, name="isl2")
    _check_points(run, {
        "isl128_osl32.c4": {"benchmark_type": "concurrency", "isl": 128, "osl": 32},
        "isl512_osl32.c4": {"benchmark_type": "concurrency", "isl": 512, "osl": 32},
    }, jobs)
    rows = {r["point"]: r for r in run.json("results.json")["results"]}
    # the longer prompts really were sent: 4× the input tokens for the same request count
    assert rows["isl512_osl32.c4"]["input_tokens"] > 3 * rows["isl128_osl32.c4"]["input_tokens"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_manual_job_serves_until_sigterm_then_leaves_nothing(jobs, e2e) -> None:
    job = jobs.start(config=PERF / "mocker-ctx1-gen1-manual.yaml", name="manual")
    job.wait_for_files(job.out / "endpoint.json", timeout_s=200, what="the manual job wrote endpoint.json")
    endpoint = json.loads((job.out / "endpoint.json").read_text())
    assert endpoint["stop"] == {"pid": job.proc.pid, "command": f"kill -TERM {job.proc.pid}"}
    body = json.dumps({"model": endpoint["model"], "prompt": "hello", "max_tokens": 4}).encode()
    req = urllib.request.Request(endpoint["completions_url"], data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - the job's own 127.0.0.1 server
        assert resp.status == 200
        assert json.loads(resp.read())["choices"]
    shown = subprocess.run([sys.executable, "-m", "perfsanity", "status", str(job.out), "--no-slurm"], cwd=REPO,
                           capture_output=True, text=True, timeout=60, env=jobs.env())
    assert shown.returncode == 0, shown.stderr
    assert f"endpoint {endpoint['url']}" in shown.stdout and f"kill -TERM {job.proc.pid}" in shown.stdout
    time.sleep(3)  # still serving a while later: nothing ends a manual job but its user
    assert job.proc.poll() is None and (job.out / "endpoint.json").exists()
    tree = e2e.processes_of(jobs.marker, job.out)
    assert len(tree) >= 4, e2e.describe(tree)  # launcher, roles and their servers

    os.kill(job.proc.pid, signal.SIGTERM)  # to submit.py only, as the endpoint says
    finished = job.wait(120)
    assert finished.returncode == 0, finished.stdout[-4000:]
    deadline = time.monotonic() + 10
    while (left := [p for p in tree if e2e.alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, "still alive after SIGTERM:\n" + e2e.describe(left)
    assert not e2e.processes_of(jobs.marker, job.out)
    report = finished.json("report.json")
    assert report["reason"].startswith("stopped by user"), report["reason"]
    assert finished.json("rendezvous/benchmark.status")["status"] == "stopped"
    shown = subprocess.run([sys.executable, "-m", "perfsanity", "status", str(job.out), "--no-slurm"], cwd=REPO,
                           capture_output=True, text=True, timeout=60, env=jobs.env())
    assert "stopped by user" in shown.stdout, shown.stdout
