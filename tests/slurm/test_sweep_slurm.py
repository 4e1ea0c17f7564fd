"""Sweeps on the real local SLURM: ``submit.py --sweep FILE --out DIR --submit --retries 1``.

* A 2-point dynamo-mocker sweep (``benchmark.concurrency_list`` 1 and 2, one node each) completes and
  ``python -m perfsanity status DIR`` shows both points COMPLETED with their throughput.
* While it runs, the node of point 0's job is set DOWN (``scontrol update state=down``): a real
  NODE_FAIL (the base config asks for ``--no-requeue``, so SLURM ends the job instead of requeueing
  it). The sweep resubmits that point once, archives the failed attempt, and the retry completes.
* A point that fails its test (a crashing prefill worker) is not resubmitted, even with ``--retries``.

Needs ``scripts/local_slurm/start.sh`` (skipped without it, failed under CI=true). The node taken
down is always resumed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from perfsanity.jobs import slurm as jobs

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

CONFIGS = Path(__file__).resolve().parent / "configs"
NODE_DOWN_REASON = "perfsanity-test-node-fail"


def _manifest(sweep_dir: Path) -> dict | None:
    try:
        return json.loads((sweep_dir / "sweep_manifest.json").read_text())
    except (OSError, ValueError):
        return None


def _cancel_sweep_jobs(sweep_dir: Path, s) -> None:  # noqa: ANN001
    for p in (_manifest(sweep_dir) or {}).get("points", []):
        for attempt in p.get("attempts", []):
            s.cancel_quietly(attempt.get("job_id") if str(attempt.get("job_id", "")).isdigit() else None)


@pytest.fixture(scope="module")
def node_fail_sweep(cluster, s, tmp_path_factory):
    """Run the 2-point sweep with --retries 1, failing point 0's first job with a real NODE_FAIL."""
    root = tmp_path_factory.mktemp("sweep")
    sweep_dir = root / f"sweep-{uuid.uuid4().hex[:10]}"
    argv = [sys.executable, str(s.SUBMIT), "--sweep", str(CONFIGS / "sweep-concurrency.yaml"), "--out", str(sweep_dir),
            "--submit", "--retries", "1", "--cluster", str(s.LOCAL_CLUSTER)]
    log = root / "sweep.log"
    downed: list[str] = []
    injected: dict = {}
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=s.REPO_ROOT, env=s.env(root), stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        def point0_serving() -> tuple[str, Path] | None:
            if proc.poll() is not None:
                pytest.fail(f"the sweep ended (exit {proc.returncode}) before the injection:\n{log.read_text()[-3000:]}",
                            pytrace=False)
            m = _manifest(sweep_dir)
            if not m or not m["points"][0].get("job_id"):
                return None
            job_dir = sweep_dir / m["points"][0]["job_dir"]
            # servers up: the failure hits a job in the middle of its work, not one still queued
            if not (job_dir / "rendezvous" / "GEN_0.addr").exists():
                return None
            return m["points"][0]["job_id"], job_dir

        job_id, job_dir = s.wait_for(point0_serving, timeout_s=120, what="point 0's job to be serving")
        info = jobs.job_state(job_id)
        assert info.state == "RUNNING", info
        node = s.job_nodes(job_id)[0]
        downed.append(node)
        s.node_down(node, NODE_DOWN_REASON)
        final = jobs.wait_for_job(job_id, timeout_s=60, poll_s=0.3)
        injected.update(job_id=job_id, node=node, state=final.state, job_dir=job_dir)
        # processes of the failed job must go away (slurmd kills the steps of a job on a downed node)
        injected["left"] = s.wait_no_processes(str(job_dir), timeout_s=30, job_id=job_id)
        s.resume_node(node)
        downed.clear()
        try:
            proc.wait(timeout=420)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"sweep not done after 420s:\n{log.read_text()[-3000:]}", pytrace=False)
        yield {"dir": sweep_dir, "rc": proc.returncode, "log": log.read_text(), "injected": injected,
               "elapsed_s": time.monotonic() - started, "env": s.env(root)}
    finally:
        for node in downed:
            s.resume_node(node)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        _cancel_sweep_jobs(sweep_dir, s)


@pytest.mark.timeout(600)
def test_sweep_two_points_complete_and_status_shows_them(node_fail_sweep, s):
    sweep_dir = node_fail_sweep["dir"]
    assert node_fail_sweep["rc"] == 0, node_fail_sweep["log"][-4000:]
    manifest = _manifest(sweep_dir)
    points = manifest["points"]
    assert [p["parameters"]["benchmark.concurrency_list"] for p in points] == ["1", "2"]
    for p, conc in zip(points, (1, 2), strict=True):
        assert (p["state"], p["exit_code"]) == ("COMPLETED", 0), p
        results = json.loads((sweep_dir / p["job_dir"] / "results.json").read_text())
        assert results["status"] == "passed"
        assert [r["concurrency"] for r in results["results"]] == [conc]
        assert all(r["completed"] == r["requested"] for r in results["results"])

    proc = s.run([sys.executable, "-m", "perfsanity", "status", str(sweep_dir), "--json"],
                 env=node_fail_sweep["env"], timeout_s=60)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    rows = rows if isinstance(rows, list) else rows.get("jobs", rows)
    by_name = {r["name"]: r for r in rows}
    for p in points:
        row = by_name[p["name"]]
        assert row["state"] == "COMPLETED" and row["verdict"] == "passed", row
        assert row["best_output_tps"] and row["best_output_tps"] > 0, row
        assert row["job_id"] == p["job_id"]

    text = s.run([sys.executable, "-m", "perfsanity", "status", str(sweep_dir)], env=node_fail_sweep["env"],
                 timeout_s=60)
    assert text.returncode == 0, text.stderr
    for p in points:
        line = next((ln for ln in text.stdout.splitlines() if p["name"] in ln), "")
        assert "COMPLETED" in line and "passed" in line, text.stdout
        assert re.search(r"\d+\.\d", line.split("passed", 1)[1]), f"no throughput figure in {line!r}"
    left = s.wait_no_processes(str(sweep_dir), timeout_s=30)
    assert not left, "\n".join(left)


@pytest.mark.timeout(600)
def test_sweep_retries_node_fail_once(node_fail_sweep):
    injected = node_fail_sweep["injected"]
    assert injected["state"] == "NODE_FAIL", injected
    assert not injected["left"], "processes of the NODE_FAIL job still running:\n" + "\n".join(injected["left"])
    points = _manifest(node_fail_sweep["dir"])["points"]
    first, second = points
    assert [a["state"] for a in first["attempts"]] == ["NODE_FAIL", "COMPLETED"], first["attempts"]
    failed, retry = first["attempts"]
    assert failed["job_id"] == injected["job_id"] and failed["infrastructure_failure"] is True
    assert retry["job_id"] != failed["job_id"] and first["job_id"] == retry["job_id"]
    archived = injected["job_dir"] / failed["archived"]
    assert (archived / "jobid.json").is_file() and (archived / "rendezvous").is_dir(), sorted(archived.iterdir())
    assert json.loads((archived / "jobid.json").read_text())["job_id"] == failed["job_id"]
    assert [a["state"] for a in second["attempts"]] == ["COMPLETED"]
    assert "infrastructure failure NODE_FAIL; retry 1/1" in node_fail_sweep["log"]


@pytest.mark.timeout(240)
def test_sweep_does_not_retry_a_test_failure(cluster, s, tmp_path):
    sweep_dir = tmp_path / f"crash-{uuid.uuid4().hex[:10]}"
    argv = [sys.executable, str(s.SUBMIT), "--sweep", str(CONFIGS / "sweep-crash.yaml"), "--out", str(sweep_dir),
            "--submit", "--retries", "1", "--cluster", str(s.LOCAL_CLUSTER)]
    try:
        proc = s.run(argv, env=s.env(tmp_path), timeout_s=200, log=tmp_path / "sweep.log")
        assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
        (point,) = _manifest(sweep_dir)["points"]
        assert (point["state"], point["exit_code"]) == ("FAILED", 1), point
        assert len(point["attempts"]) == 1 and point["attempts"][0]["infrastructure_failure"] is False
        assert "retry 1/1" not in proc.stdout and "(retry after" not in proc.stdout
        assert jobs.job_state(point["job_id"]).state == "FAILED"
    finally:
        _cancel_sweep_jobs(sweep_dir, s)
