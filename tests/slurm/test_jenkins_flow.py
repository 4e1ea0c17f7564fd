"""The Jenkins side of the L0 flow on the real local SLURM.

* ``run_perf_test.sh`` (stage ``all``): exit 0, a ``junit.xml`` Jenkins' junit step accepts (no
  failures), ``results.json`` in the workspace.
* The Jenkinsfile's stages one by one (``jenkins_stage.sh validate|submit|track|collect`` with
  ``TEST_LIST`` / ``CLUSTER_FILE``, as the Jenkinsfile runs them): each stage does only its part; the
  collect stage runs the results pipeline on the agent (gate.json, junit.xml, the agent's history).
* The Jenkinsfile itself, run by ``jenkinsfile_model`` (declarative semantics, no Jenkins server) on a
  test list whose jobs go wrong: one fails (a role exits at start), one is killed (scancel while it
  runs), one is never submitted (sbatch rejects it). Jenkins' junit step still gets every test's
  entry, failed and naming why, and the artifacts are archived.

Needs ``scripts/local_slurm/start.sh`` (skipped without it, failed under CI=true).
"""

from __future__ import annotations

import json
import subprocess
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import jenkinsfile_model
import pytest
from junitparser import JUnitXml

from perfsanity.jobs import slurm as jobs
from perfsanity.results.history import HistoryStore

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

TEST_ID = "disagg_upload-e2e-mocker-ctx1-gen1"
REPO = Path(__file__).resolve().parents[2]
JENKINS_STAGE = REPO / "jenkins/scripts/perf/jenkins_stage.sh"
JENKINSFILE = REPO / "Jenkinsfile"
TEST_CONFIGS = Path(__file__).resolve().parent / "configs"
FAILING = "disagg_upload-e2e-slurm-crash-ctx"  # CTX_0 exits at start
KILLED = "disagg_upload-e2e-slurm-long-bench"  # scancelled while it runs
REJECTED = "disagg_upload-e2e-slurm-bad-partition"  # sbatch rejects it


def _check_junit_like_jenkins(path: Path) -> None:
    """What Jenkins' junit step needs: a <testsuites>/<testsuite> root, named test cases, no failures."""
    root = ET.parse(path).getroot()
    assert root.tag in ("testsuites", "testsuite"), root.tag
    xml = JUnitXml.fromfile(str(path))
    suites = list(xml) if root.tag == "testsuites" else [xml]
    cases = [case for suite in suites for case in suite]
    assert cases, f"{path}: no test cases"
    for case in cases:
        assert case.name and case.classname, f"{path}: test case without name/classname"
        assert case.is_passed or case.is_skipped, f"{path}: {case.classname}.{case.name} {case.result}"
    assert xml.failures == 0 and xml.errors == 0


def _print_tail(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-2000:]}"


@pytest.mark.timeout(360)
def test_run_perf_test_all_stages(cluster, s, tmp_path):
    ws = tmp_path / f"ws-{uuid.uuid4().hex[:10]}"
    argv = ["bash", str(s.RUN_PERF_TEST), "--test", TEST_ID, "--workspace", str(ws), "--cluster", str(s.LOCAL_CLUSTER)]
    try:
        proc = s.run(argv, env=s.env(tmp_path, PERFSANITY_GPU_TYPE="CPU"), timeout_s=330, log=tmp_path / "run.log")
        assert proc.returncode == 0, _print_tail(proc)
        info = json.loads((ws / "jobid.json").read_text())
        assert (info["state"], info["exit_code"]) == ("COMPLETED", 0)
        assert "[track] job" in proc.stdout and "[collect] junit" in proc.stdout
        _check_junit_like_jenkins(ws / "junit.xml")
        results = json.loads((ws / "results.json").read_text())
        assert results["status"] == "passed"
        assert [r["concurrency"] for r in results["results"]] == [1, 8]
        assert all(r["completed"] == r["requested"] for r in results["results"])
        # the L0 inputs Jenkins hands to submit.py, and the job's own log, are in the workspace
        for name in ("test_list.txt", "script_prefix.sh", "srun_args.txt", "launch.sh", f"slurm-{info['job_id']}.out"):
            assert (ws / name).is_file(), name
        left = s.wait_no_processes(str(ws), timeout_s=30)
        assert not left, "\n".join(left)
    finally:
        s.cancel_quietly(s.job_id_of(ws))


@pytest.mark.timeout(360)
def test_jenkinsfile_stages_one_by_one(cluster, s, tmp_path):
    """jenkins_stage.sh <stage> from the Jenkins workspace (here tmp_path): perf-ws/<test>/."""
    env = s.env(tmp_path, TEST_LIST=f"# nightly\n{TEST_ID}\n", CLUSTER_FILE=str(s.LOCAL_CLUSTER), UPLOAD="false",
                PERFSANITY_GPU_TYPE="CPU")
    ws = tmp_path / "perf-ws" / TEST_ID

    def stage(name: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        return s.run(["bash", str(JENKINS_STAGE), name], env=env, cwd=tmp_path, timeout_s=timeout_s,
                     log=tmp_path / f"{name}.log")

    try:
        proc = stage("validate")
        assert proc.returncode == 0, _print_tail(proc)
        assert (ws / "launch.sh").is_file() and not (ws / "jobid.json").exists()
        assert subprocess.run(["bash", "-n", str(ws / "launch.sh")], check=False).returncode == 0

        proc = stage("submit")
        assert proc.returncode == 0, _print_tail(proc)
        job_id = s.job_id_of(ws)
        assert job_id and f"[submit] job {job_id}" in proc.stdout
        assert jobs.job_state(job_id).state in ("PENDING", "RUNNING", "COMPLETING", "COMPLETED")
        assert not (ws / "junit.xml").exists()  # submit does not wait

        proc = stage("track", timeout_s=300)
        assert proc.returncode == 0, _print_tail(proc)
        info = json.loads((ws / "jobid.json").read_text())
        assert (info["job_id"], info["state"], info["exit_code"]) == (job_id, "COMPLETED", 0)

        proc = stage("collect")
        assert proc.returncode == 0, _print_tail(proc)
        _check_junit_like_jenkins(ws / "junit.xml")
        assert (ws / "results.json").is_file()
        # the results pipeline ran here: gated, and recorded in the agent's history (not post-merge: UPLOAD=false)
        gate = json.loads((ws / "gate.json").read_text())
        assert {v["concurrency"] for v in gate["verdicts"]} == {1, 8} and gate["verdict"] != "FAIL"
        with HistoryStore(tmp_path / "history.sqlite") as store:
            recs = store.query({"config_name": "mocker-ctx1-gen1"}, valid_only=False)
        assert sorted(r.keys.concurrency for r in recs) == [1, 8] and not any(r.post_merge for r in recs)
        assert json.loads((ws / "finalized.json").read_text())["exit_code"] == 0
        # Jenkins' post step: junit(testResults: 'perf-ws/**/junit.xml') finds exactly this one
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.glob("perf-ws/**/junit.xml")) == [
            Path("perf-ws") / TEST_ID / "junit.xml"]
    finally:
        s.cancel_quietly(s.job_id_of(ws))


@pytest.mark.timeout(120)
def test_validate_stage_rejects_unknown_test(cluster, s, tmp_path):
    proc = s.run(["bash", str(s.RUN_PERF_TEST), "--stage", "validate", "--test", "disagg_upload-e2e-no-such-config",
                  "--workspace", str(tmp_path / "ws"), "--cluster", str(s.LOCAL_CLUSTER)],
                 env=s.env(tmp_path), timeout_s=60)
    assert proc.returncode != 0
    assert "no-such-config" in proc.stderr and not (tmp_path / "ws" / "launch.sh").exists()


def _wait_running(s, ws: Path, timeout_s: float) -> str:
    def running() -> str | None:
        job_id = s.job_id_of(ws)
        return job_id if job_id and jobs.job_state(job_id).state == "RUNNING" else None

    return s.wait_for(running, timeout_s, f"the job of {ws.name} to be RUNNING")


@pytest.mark.timeout(1200)
def test_jenkinsfile_collects_failed_killed_and_rejected_jobs(cluster, s, tmp_path):
    """The Jenkinsfile as Jenkins runs it: junit entries for a failed, a killed and a rejected job."""
    (tmp_path / "jenkins").symlink_to(REPO / "jenkins")  # the workspace is a checkout: sh steps use jenkins/...
    params = {"TEST_LIST": f"# nightly\n{FAILING}\n{KILLED}\n{REJECTED}\n", "GPU_TYPE": "CPU",
              "CLUSTER_FILE": str(s.LOCAL_CLUSTER), "UPLOAD": "false"}
    # test ids of tests/slurm/configs (the L0 lookup's upstream folder override)
    env = s.env(tmp_path, DISAGG_CONFIG_FOLDER=str(TEST_CONFIGS / "disagg" / "perf"))
    ws = {t: tmp_path / "perf-ws" / t for t in (FAILING, KILLED, REJECTED)}
    killed: dict[str, str] = {}

    def kill_before_track() -> None:
        killed["job_id"] = _wait_running(s, ws[KILLED], timeout_s=480)  # the shared cluster may be busy
        jobs.cancel(killed["job_id"])

    try:
        build = jenkinsfile_model.run(JENKINSFILE, tmp_path, params, env, before_stage={"track": kill_before_track},
                                      sh_timeout_s=420)
        log = "\n".join(build.log)
        # Jenkins' junit step got one file per test, and an entry per test that names what went wrong
        assert sorted(p.parent.name for p in build.junit_files) == sorted(ws), log
        assert build.result == "FAILURE", log
        assert build.stages == {"validate": "SUCCESS", "submit": "FAILURE", "track": "FAILURE"}, log
        by_test = {}
        for test, path in ((t, ws[t] / "junit.xml") for t in ws):
            xml = JUnitXml.fromfile(str(path))
            cases = [c for suite in (xml if ET.parse(path).getroot().tag == "testsuites" else [xml]) for c in suite]
            assert cases and all(c.name and c.classname for c in cases), (test, path.read_text())
            by_test[test] = (cases, path.read_text())
        for test in ws:
            cases, text = by_test[test]
            assert any(not c.is_passed and not c.is_skipped for c in cases), (test, text)
        assert f"SLURM job {killed['job_id']} ended CANCELLED" in by_test[KILLED][1], by_test[KILLED][1]
        # the crashed CTX_0 named as the role failure, or (when the job's own verdict came first) the job's exit
        failing = by_test[FAILING][1]
        assert "CTX_0 server exited with code 2 while starting" in failing or "job failed (exit code 1)" in failing, \
            failing
        assert "the job never ran" in by_test[REJECTED][1], by_test[REJECTED][1]
        assert len([c for c in build.junit_cases if c[2] == "failed"]) >= 3
        # the failed and the killed job's batch log, launch.sh and report are archived
        archived = {p.relative_to(tmp_path).as_posix() for p in build.archived}
        for test in (FAILING, KILLED):
            job_id = s.job_id_of(ws[test])
            for name in ("launch.sh", f"slurm-{job_id}.out", "report.json", "jobid.json"):
                assert f"perf-ws/{test}/{name}" in archived, (name, sorted(archived))
        state = json.loads((ws[KILLED] / "jobid.json").read_text())["state"]
        assert state == "CANCELLED", state
        assert json.loads((ws[FAILING] / "jobid.json").read_text())["state"] in ("FAILED", "COMPLETED")
    finally:
        for test in ws.values():
            s.cancel_quietly(s.job_id_of(test))
