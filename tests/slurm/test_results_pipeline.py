"""The results pipeline runs on the submit side, on the real local SLURM.

* A BENCHMARK killed mid-run (``scancel`` after the first concurrency's result exists, while
  ``submit.py --submit --wait`` waits) still yields ``gate.json`` and ``junit.xml`` from the submit
  side: gate testcases for the finished concurrency and a failure naming the cancel; the finished
  concurrency is in the submit side's history, as invalid; ``perfsanity collect`` again records
  nothing twice.
* Compute nodes need no database credentials: a job whose roles see an unusable history database and
  an unreachable upload target passes, writes no gate/junit/history files itself, and
  ``perfsanity collect DIR`` on the submit side records it.

Needs ``scripts/local_slurm/start.sh`` (skipped without it, failed under CI=true).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from junitparser import Failure, JUnitXml

from perfsanity.jobs import slurm as jobs
from perfsanity.results.gate import BaselinesFile
from perfsanity.results.history import HistoryStore

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

CONFIGS = Path(__file__).resolve().parent / "configs" / "disagg" / "perf"
NO_HISTORY = "/proc/perfsanity-no-history/history.sqlite"  # cannot be created, not even by root


def _job_dir(tmp_path: Path, name: str) -> Path:
    """A job dir whose path is unique on this machine (it marks the job's processes in /proc)."""
    return tmp_path / f"{name}-{uuid.uuid4().hex[:10]}"


def _cases(job_dir: Path) -> dict:
    return {case.name: case for suite in JUnitXml.fromfile(str(job_dir / "junit.xml")) for case in suite}


def _failures(job_dir: Path) -> dict[str, str]:
    return {name: r.message or "" for name, case in _cases(job_dir).items() for r in case.result
            if isinstance(r, Failure)}


def _records(db: Path, config_name: str) -> list:
    with HistoryStore(db) as store:
        return store.query({"config_name": config_name}, valid_only=False)


def _collect(s, job_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:  # noqa: ANN001
    return s.run([sys.executable, "-m", "perfsanity", "collect", str(job_dir)], env=env, timeout_s=120)


@pytest.mark.timeout(420)
def test_killed_benchmark_still_yields_gate_and_junit_from_the_submit_side(cluster, s, tmp_path):
    job_dir = _job_dir(tmp_path, "killed")
    baselines = tmp_path / "baselines.yaml"
    pins = BaselinesFile()
    pins.pin("slurm-long-bench", "output_token_throughput", 0.001, 1)  # c1 passes its gate
    pins.save(baselines)
    db = tmp_path / "history.sqlite"
    env = s.env(tmp_path, PERFSANITY_BASELINES=str(baselines))
    log = tmp_path / "submit.log"
    with log.open("w") as out:
        proc = subprocess.Popen(s.submit_cmd(CONFIGS / "slurm-long-bench.yaml", job_dir, "--submit", "--wait"),
                                cwd=s.REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        def first_result() -> dict | None:
            if proc.poll() is not None:
                pytest.fail(f"submit.py ended (exit {proc.returncode}) before the first concurrency finished:\n"
                            f"{log.read_text()[-3000:]}", pytrace=False)
            data = s.read_json(job_dir / "results.json")
            return data if data and data.get("results") else None

        before = s.wait_for(first_result, timeout_s=240, what="the first concurrency in results.json", poll_s=0.3)
        job_id = s.job_id_of(job_dir)
        assert job_id and jobs.job_state(job_id).state == "RUNNING"
        assert not (job_dir / "rendezvous" / "benchmark.status").exists(), "benchmark already over: not mid-run"
        assert [r["concurrency"] for r in before["results"]] == [1]
        # nothing on the compute node ran the pipeline: no gate result, no junit before the job ends
        assert not (job_dir / "gate.json").exists() and not (job_dir / "junit.xml").exists()

        jobs.cancel(job_id)
        try:
            rc = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"submit.py --wait did not return within 120s of the cancel:\n{log.read_text()[-3000:]}",
                        pytrace=False)
        output = log.read_text()
        assert rc != 0, output[-3000:]
        assert f"job {job_id}: CANCELLED" in output, output[-3000:]

        gate = json.loads((job_dir / "gate.json").read_text())
        assert {v["concurrency"] for v in gate["verdicts"]} == {1}, gate
        cases = _cases(job_dir)
        # gated, or marked CLIENT_SATURATED when the shared node was too busy to measure (load/validity)
        c1 = cases["c1.output_token_throughput"]
        assert c1.is_passed or any("CLIENT_SATURATED" in (r.message or "") for r in c1.result), c1.result
        assert {"c1.ttft_median", "c1.itl_median"} <= set(cases)
        assert not any(name.startswith("c2.") for name in cases), sorted(cases)
        failures = _failures(job_dir)
        assert failures.get("JOB", "").startswith(f"SLURM job {job_id} ended CANCELLED"), failures
        # the finished concurrency is in the submit side's history, marked invalid (a killed run)
        [rec] = _records(db, "slurm-long-bench")
        assert rec.keys.concurrency == 1 and not rec.valid and "CANCELLED" in rec.invalid_reason
        assert json.loads((job_dir / "finalized.json").read_text())["exit_code"] != 0

        # collecting again (e.g. by hand) rewrites the outputs but records nothing twice
        again = _collect(s, job_dir, env)
        assert again.returncode != 0 and "not adding again" in again.stdout, again.stdout + again.stderr
        assert len(_records(db, "slurm-long-bench")) == 1
        assert _failures(job_dir) == failures
        left = s.wait_no_processes(str(job_dir), timeout_s=30)
        assert not left, f"processes of cancelled job {job_id} still running:\n" + "\n".join(left)
    finally:
        if proc.poll() is None:
            proc.kill()  # the submit.py this test started
            proc.wait(timeout=10)
        s.cancel_quietly(s.job_id_of(job_dir))


@pytest.mark.timeout(300)
def test_compute_nodes_need_no_history_database(cluster, s, tmp_path):
    job_dir = _job_dir(tmp_path, "nodb")
    # the job (and so every srun step) inherits this environment: a history that cannot be opened and an
    # upload target that does not answer, as on a compute node without credentials
    job_env = s.env(tmp_path, PERFSANITY_HISTORY=NO_HISTORY, PERFSANITY_OPENSEARCH_URL="http://127.0.0.1:9/x")
    proc = s.run(s.submit_cmd(CONFIGS / "slurm-sweep-base.yaml", job_dir, "--submit"), env=job_env, timeout_s=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id = s.job_id_of(job_dir)
    try:
        info = jobs.wait_for_job(job_id, timeout_s=240, poll_s=0.5)
        assert (info.state, info.exit_code) == ("COMPLETED", 0), (info, (job_dir / f"slurm-{job_id}.out").read_text())
        results = json.loads((job_dir / "results.json").read_text())
        assert results["status"] == "passed" and results["results"], results
        for name in ("gate.json", "junit.xml", "gate_junit.xml", "history_records.json", "finalized.json"):
            assert not (job_dir / name).exists(), f"{name} written inside the job"

        db = tmp_path / "history.sqlite"  # the submit side's history
        done = _collect(s, job_dir, s.env(tmp_path))
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"job {job_id}: COMPLETED" in done.stdout and "recorded 1 record(s)" in done.stdout
        recs = _records(db, "slurm-sweep-base")
        # valid, or invalid only because the shared node was too busy to measure (load/validity)
        assert [r.keys.concurrency for r in recs] == [1]
        assert recs[0].valid or "client_saturated" in repr(recs[0]).lower(), recs[0]
        assert not _failures(job_dir) and "c1.output_token_throughput" in _cases(job_dir)
    finally:
        s.cancel_quietly(job_id)
