"""Whole perf jobs on the real local SLURM: ``submit.py --submit`` of dynamo-mocker configs.

* a 2 prefill + 2 decode job on 4 nodes completes; every role ran on the node the topology gave it;
  every concurrency completed all its requests; nothing of the job is left running;
* a prefill worker that crashes at start fails the job fast, names CTX_0 (with its log tail) in
  junit.xml, and leaves no process behind;
* ``scancel`` in the middle of the benchmark stops every server, keeps the finished concurrencies'
  results and runs the launch script's TERM-trap triage;
* a job that SLURM requeues after a node failure (``scontrol update state=down`` under it) reruns
  cleanly in its job dir and completes.

Needs ``scripts/local_slurm/start.sh`` (skipped without it, failed under CI=true). Test configs are
in ``tests/slurm/configs/`` (see its README).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from junitparser import JUnitXml

from perfsanity.jobs import slurm as jobs

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

CONFIGS = Path(__file__).resolve().parent / "configs" / "disagg" / "perf"


def _job_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A job dir whose path is unique on this machine (it marks the job's processes in /proc)."""
    return tmp_path_factory.mktemp("e2e") / f"{name}-{uuid.uuid4().hex[:10]}"


# ------------------------------------------------------------------ a. 2 ctx + 2 gen on 4 nodes


@pytest.fixture(scope="module")
def ctx2_gen2(cluster, s, tmp_path_factory):
    """One completed 4-node job, shared by the assertions below."""
    job_dir = _job_dir(tmp_path_factory, "ctx2-gen2")
    env = s.env(job_dir.parent)
    started = time.monotonic()
    try:
        proc = s.run(s.submit_cmd(CONFIGS / "slurm-ctx2-gen2.yaml", job_dir, "--submit", "--wait"), env=env,
                     timeout_s=300, log=job_dir.parent / "submit.log")
        yield {"dir": job_dir, "proc": proc, "job_id": s.job_id_of(job_dir), "elapsed_s": time.monotonic() - started}
    finally:
        s.cancel_quietly(s.job_id_of(job_dir))


@pytest.mark.timeout(360)
def test_ctx2_gen2_job_completes(ctx2_gen2, s):
    job_dir, proc, job_id = ctx2_gen2["dir"], ctx2_gen2["proc"], ctx2_gen2["job_id"]
    assert proc.returncode == 0, f"submit.py --wait exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    assert job_id, f"no jobid.json in {job_dir}"
    info = jobs.job_state(job_id)
    assert (info.state, info.exit_code) == ("COMPLETED", 0), info
    recorded = json.loads((job_dir / "jobid.json").read_text())
    assert (recorded["state"], recorded["exit_code"]) == ("COMPLETED", 0)
    # the final update keeps when the job was submitted (not when the wait ended)
    submitted = dt.datetime.strptime(recorded["submitted"], "%Y-%m-%dT%H:%M:%S%z").astimezone().replace(tzinfo=None)
    assert abs((submitted - dt.datetime.fromisoformat(info.raw["SubmitTime"])).total_seconds()) <= 5, recorded
    assert f"job {job_id}: COMPLETED (exit code 0)" in proc.stdout
    suites = JUnitXml.fromfile(str(job_dir / "junit.xml"))
    assert suites.failures == 0 and suites.errors == 0, (job_dir / "junit.xml").read_text()[:3000]


@pytest.mark.timeout(360)
def test_ctx2_gen2_roles_ran_on_their_nodes(ctx2_gen2, s):
    job_dir, job_id = ctx2_gen2["dir"], ctx2_gen2["job_id"]
    roles = json.loads((job_dir / "job.json").read_text())["roles"]  # role -> node indices of the topology
    assert sorted(roles) == ["BENCHMARK", "CTX_0", "CTX_1", "DISAGG_SERVER", "GEN_0", "GEN_1"]
    nodes = s.job_nodes(job_id)  # the job's allocation, from scontrol
    assert len(nodes) == 4
    recorded_hosts = json.loads((job_dir / "jobid.json").read_text())["role_hosts"]
    started = s.started_roles(job_dir)
    assert {k.split(".")[0] for k in started} == set(roles), started
    for role, indices in roles.items():
        want = [nodes[i] for i in indices]
        ran = sorted(d["node"] for k, d in started.items() if k.split(".")[0] == role)
        assert ran == sorted(want), f"{role}: topology nodes {indices} = {want}, ran on {ran}"
        assert recorded_hosts[role] == want
        for k, d in started.items():
            if k.split(".")[0] == role:
                assert d["slurm_job_id"] == job_id, d
    # the four servers really are on four different nodes
    assert len({nodes[roles[r][0]] for r in ("GEN_0", "GEN_1", "CTX_0", "CTX_1")}) == 4


@pytest.mark.timeout(360)
def test_ctx2_gen2_every_concurrency_completed(ctx2_gen2):
    results = json.loads((ctx2_gen2["dir"] / "results.json").read_text())
    assert results["status"] == "passed", results.get("failures")
    assert [r["concurrency"] for r in results["results"]] == [1, 4]
    for r in results["results"]:
        assert r["requested"] == r["concurrency"] * 4  # multi_round 4
        assert r["completed"] == r["requested"] and r["failed"] == 0, r
        assert r["output_token_throughput"] > 0


@pytest.mark.timeout(360)
def test_ctx2_gen2_leaves_no_process(ctx2_gen2, s):
    left = s.wait_no_processes(str(ctx2_gen2["dir"]), timeout_s=30)
    assert not left, "processes of the finished job still running:\n" + "\n".join(left)


# ------------------------------------------------------------------ b. a prefill worker crashes


@pytest.mark.timeout(180)
def test_ctx_crash_at_start_fails_job_fast(cluster, s, tmp_path_factory):
    job_dir = _job_dir(tmp_path_factory, "crash")
    try:
        proc = s.run(s.submit_cmd(CONFIGS / "slurm-crash-ctx.yaml", job_dir, "--submit", "--wait"),
                     env=s.env(job_dir.parent), timeout_s=150, log=job_dir.parent / "submit.log")
        job_id = s.job_id_of(job_dir)
        assert job_id, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert proc.returncode != 0
        info = jobs.job_state(job_id)
        assert info.state == "FAILED" and info.exit_code != 0, info
        raw = s.scontrol_job(job_id)
        ran_s = s.seconds_between(raw["StartTime"], raw["EndTime"])
        assert ran_s <= 60, f"job {job_id} ran {ran_s:.0f}s before failing"

        suites = JUnitXml.fromfile(str(job_dir / "junit.xml"))
        cases = {case.name: case for suite in suites for case in suite}
        assert "CTX_0" in cases, sorted(cases)
        failure = cases["CTX_0"].result[0]
        assert "CTX_0 server exited with code 2 while starting" in failure.message
        # the log tail carries the crashing server's own error
        assert "unrecognized arguments: --no-such-mocker-option" in (failure.text or "")

        report = json.loads((job_dir / "report.json").read_text())
        assert report["failed_role"] == "CTX_0"
        assert (job_dir / "rendezvous" / "CTX_0.failed").exists()
        left = s.wait_no_processes(str(job_dir), timeout_s=20)
        assert not left, f"processes of failed job {job_id} still running:\n" + "\n".join(left)
    finally:
        s.cancel_quietly(s.job_id_of(job_dir))


# ------------------------------------------------------------------ c. scancel mid-benchmark


@pytest.mark.timeout(300)
def test_scancel_mid_benchmark_keeps_results_and_stops_servers(cluster, s, tmp_path_factory):
    job_dir = _job_dir(tmp_path_factory, "cancel")
    try:
        proc = s.run(s.submit_cmd(CONFIGS / "slurm-long-bench.yaml", job_dir, "--submit"),
                     env=s.env(job_dir.parent), timeout_s=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        job_id = s.job_id_of(job_dir)

        before = s.wait_first_result(job_dir, job_id, timeout_s=180)
        assert jobs.job_state(job_id).state == "RUNNING"
        assert not (job_dir / "rendezvous" / "benchmark.status").exists(), "benchmark already over: not mid-run"
        servers = [p for p in s.job_processes(str(job_dir)) if "dynamo." in p]
        assert len(servers) >= 3, f"expected the frontend and two workers running: {servers}"

        jobs.cancel(job_id)
        info = jobs.wait_for_job(job_id, timeout_s=60, poll_s=0.3)
        assert info.state == "CANCELLED", info  # exit code of a cancel is racy: judge by the state

        left = s.wait_no_processes(str(job_dir), timeout_s=30)  # KillWait=5
        assert not left, f"processes of cancelled job {job_id} still running:\n" + "\n".join(left)

        after = json.loads((job_dir / "results.json").read_text())
        done = {r["concurrency"]: r for r in after["results"]}
        for r in before["results"]:
            assert done.get(r["concurrency"]) == r, f"finished concurrency {r['concurrency']} lost or changed"
        assert after["status"] != "passed"
        assert len(after["results"]) < 2, "the job finished its last concurrency before the cancel"

        # the launch script's TERM trap ran the triage (its report is printed, report.json written)
        out = (job_dir / f"slurm-{job_id}.out").read_text()
        assert "=== perfsanity triage: job received SIGTERM" in out, out[-3000:]
        assert (job_dir / "report.json").is_file()
        status = s.read_json(job_dir / "rendezvous" / "benchmark.status")
        assert status and status["status"] == "failed"  # written by BENCHMARK's finally on SIGTERM
    finally:
        s.cancel_quietly(s.job_id_of(job_dir))



# ------------------------------------------------------------------ requeue after a node failure


@pytest.mark.timeout(300)
def test_job_requeued_after_node_failure_reruns_cleanly(cluster, s, tmp_path_factory):
    """SLURM's default (JobRequeue=1) requeues a batch job whose node failed and runs launch.sh again in
    the same job dir: the rerun must not see the first run's rendezvous files (stale addresses and
    benchmark.status would stop its servers at once and fail the benchmark)."""
    job_dir = _job_dir(tmp_path_factory, "requeue")
    failed_node = None
    try:
        # the sweep base without its --no-requeue: SLURM's default behaviour
        proc = s.run(s.submit_cmd(CONFIGS / "slurm-sweep-base.yaml", job_dir, "--submit", "--set", "slurm.extra_args="),
                     env=s.env(job_dir.parent), timeout_s=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "--no-requeue" not in (job_dir / "launch.sh").read_text()
        job_id = s.job_id_of(job_dir)
        s.wait_for(lambda: (job_dir / "rendezvous" / "GEN_0.addr").exists() or jobs.job_state(job_id).finished,
                   timeout_s=120, what=f"job {job_id}'s servers", poll_s=0.3)
        assert jobs.job_state(job_id).state == "RUNNING"
        failed_node = s.job_nodes(job_id)[0]
        first_run_started = s.started_roles(job_dir)
        s.node_down(failed_node, "perfsanity-test-requeue")
        requeued = s.wait_for(lambda: (i := jobs.job_state(job_id)).state == "PENDING" and i,
                              timeout_s=30, what=f"job {job_id} to be requeued")
        assert requeued.raw.get("Restarts") == "1", requeued.raw
        left = s.wait_no_processes(str(job_dir), timeout_s=30, job_id=job_id)
        assert not left, "processes of the failed run still running:\n" + "\n".join(left)
        # SLURM holds a requeued job back for ~2 min (BeginTime); start it now, away from the failed
        # node (its slurmd may still hold the job: starting it there again drains the node).
        for update in (f"ExcNodeList={failed_node}", "StartTime=now"):
            subprocess.run(["scontrol", "update", f"jobid={job_id}", update], check=True, capture_output=True,
                           timeout=15)
        s.resume_node(failed_node)
        info = s.wait_for(lambda: (i := jobs.job_state(job_id)).finished and i, timeout_s=150,
                          what=f"requeued job {job_id} to finish", poll_s=1.0)
        assert (info.state, info.exit_code) == ("COMPLETED", 0), (info, (job_dir / f"slurm-{job_id}.out").read_text())
        assert s.job_nodes(job_id) != [failed_node]
        results = json.loads((job_dir / "results.json").read_text())
        assert results["status"] == "passed" and all(r["completed"] == r["requested"] for r in results["results"])
        # the first run's files were moved aside, not reused
        prev = job_dir / "requeued" / "1"
        assert (prev / "rendezvous" / "GEN_0.addr").is_file(), sorted(job_dir.rglob("*.addr"))
        rerun_started = s.started_roles(job_dir)
        assert set(rerun_started) == set(first_run_started)
        assert all(rerun_started[k]["time"] > first_run_started[k]["time"] for k in rerun_started)
        left = s.wait_no_processes(str(job_dir), timeout_s=30)
        assert not left, "\n".join(left)
    finally:
        s.cancel_quietly(s.job_id_of(job_dir))
        if failed_node:
            s.resume_node(failed_node)
