"""On the real local SLURM: the mocker 2 ctx + 2 gen job, rendered by ``submit.py`` in TensorRT-LLM's
current flag form (no ``--run-ci``; ``--split-group``, ``--stage-name``, ``--cluster-name``; a
``TIMEOUT (N)`` test-list line), sbatch'ed and completed with passing results (its preflight passed on
all four nodes); and the same job with one node's job-dir path broken, which its preflight ends at once.

Needs ``scripts/local_slurm/start.sh`` (skipped without it, failed under CI=true).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

REPO = Path(__file__).resolve().parents[2]
SLURM_ENV = Path("/tmp/perfsanity-slurm/env.sh")
TEST_ID = "disagg_upload-e2e-mocker-ctx2-gen2"


def slurm_env() -> dict[str, str]:
    values = {}
    if SLURM_ENV.is_file():
        for line in SLURM_ENV.read_text().splitlines():
            if line.startswith("export ") and "=" in line:
                key, _, value = line[len("export "):].partition("=")
                values[key.strip()] = value.strip().strip("'\"")
    ok = values.get("SLURM_CONF") and Path(values["SLURM_CONF"]).is_file() and shutil.which("sbatch")
    if not ok or int(values.get("PERFSANITY_SLURM_NUM_NODES", "0") or 0) < 4:
        message = f"no local SLURM cluster with 4 nodes ({SLURM_ENV}); run scripts/local_slurm/start.sh"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {message}", pytrace=False)
        pytest.skip(message)
    return values


def submit_upstream_form(tmp_path: Path, values: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """Render the mocker 2 ctx + 2 gen job with submit.py in upstream's current form; (job dir, env)."""
    from perfsanity.cli.jenkins import write_inputs

    env = {**os.environ, **values, "PERFSANITY_HISTORY": str(tmp_path / "history.sqlite"),
           "PYTHONPATH": str(REPO)}
    for var in ("PERFSANITY_CLUSTER", "PERFSANITY_RUN_CI", "PERFSANITY_PRE_MERGE", "LLM_MODELS_ROOT",
                "AGG_CONFIG_FOLDER", "DISAGG_CONFIG_FOLDER", "pytestCommand"):
        env.pop(var, None)
    ws = tmp_path / "ws"
    ws.mkdir()
    files = write_inputs(ws, TEST_ID, partition=None, account=None, container_image=None, container_mounts=None,
                         cluster=str(REPO / "test_configs/clusters/local-slurm.yaml"))
    files["test_list"].write_text(f"# upstream test-db line\nperf/test_perf_sanity.py::test_e2e[{TEST_ID}] TIMEOUT (15)\n")
    scripts = REPO / "jenkins/scripts"
    argv = [sys.executable, str(REPO / "submit.py"), "--llm-src", str(REPO), "--test-list", str(files["test_list"]),
            "--draft-launch-sh", str(scripts / "perf/disaggregated/slurm_launch_draft.sh"),
            "--launch-sh", str(ws / "launch.sh"), "--run-sh", str(scripts / "slurm_run.sh"),
            "--install-sh", str(scripts / "slurm_install.sh"), "--script-prefix", str(files["script_prefix"]),
            "--srun-args", str(files["srun_args"]),
            "--split-group", "1", "--stage-name", "CPU-4_Nodes-Perf-Sanity-1", "--cluster-name", "local-slurm"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "node rule: upstream" in proc.stdout and "cluster defaults" in proc.stdout
    launch = (ws / "launch.sh").read_text()
    assert "export totalNodes=4\n" in launch and "export PERFSANITY_TIMEOUT=900\n" in launch  # min(900, 15 min)
    return ws, env


@pytest.mark.timeout(600)
def test_mocker_ctx2_gen2_in_the_upstream_form_completes(tmp_path: Path, monkeypatch) -> None:
    from perfsanity.jobs.slurm import cancel, submit, wait_for_job

    values = slurm_env()
    ws, env = submit_upstream_form(tmp_path, values)
    monkeypatch.setenv("SLURM_CONF", values["SLURM_CONF"])  # jobs.slurm's scontrol/sacct inherit it
    job_id = submit(ws / "launch.sh", workdir=ws, env=env)
    try:
        info = wait_for_job(job_id, timeout_s=480)
    except BaseException:
        cancel(job_id)  # our own job, by its id
        raise
    out = (ws / f"slurm-{job_id}.out").read_text()
    assert (info.state, info.exit_code) == ("COMPLETED", 0), out[-3000:]
    assert "preflight passed: 6 task(s) on 4 node(s) [node1 node2 node3 node4]" in out, out[-3000:]
    results = json.loads((ws / "results.json").read_text())
    assert results["status"] == "passed"


@pytest.mark.timeout(300)
def test_failed_preflight_ends_the_job_naming_node_and_check(tmp_path: Path, monkeypatch) -> None:
    """node2 cannot write its part of the job dir (a file where its preflight directory goes): the job
    ends within 90 s of its submission, before any install or model load, and junit.xml and report.json
    name node2 and the check."""
    from junitparser import JUnitXml

    from perfsanity.jobs.slurm import cancel, job_state, submit, wait_for_job

    values = slurm_env()
    ws, env = submit_upstream_form(tmp_path, values)
    (ws / "preflight/nodes").mkdir(parents=True)
    (ws / "preflight/nodes/node2").write_text("")
    monkeypatch.setenv("SLURM_CONF", values["SLURM_CONF"])
    started = time.monotonic()
    job_id = submit(ws / "launch.sh", workdir=ws, env=env)
    try:
        info = wait_for_job(job_id, timeout_s=240)  # queueing behind other jobs is not the job's time
    except BaseException:
        cancel(job_id)
        raise
    out = (ws / f"slurm-{job_id}.out").read_text()
    assert info.state == "FAILED" and info.exit_code != 0, out[-3000:]
    # the job's own run time (StartTime → EndTime, scontrol): queueing behind other jobs is not counted
    raw = job_state(job_id).raw
    try:
        elapsed = (dt.datetime.fromisoformat(raw["EndTime"]) - dt.datetime.fromisoformat(raw["StartTime"])).seconds
    except (KeyError, ValueError):
        elapsed = time.monotonic() - started  # scontrol forgot the job: the time since sbatch bounds it
    assert elapsed < 90, f"job ran {elapsed}s"
    # no role started (the install step runs beside the preflight and is stopped with the job)
    assert "--job-name=GEN_0" not in out and not (ws / "logs/GEN_0.log").exists()
    xml = JUnitXml.fromfile(str(ws / "junit.xml"))
    cases = [case for suite in xml for case in suite]
    failed = [c for c in cases if c.name == "PREFLIGHT"]
    assert failed, [c.name for c in cases]
    message = failed[0].result[0].message
    assert message.startswith("preflight failed: node node2 (") and ": job dir writable: cannot write " in message
    report = json.loads((ws / "report.json").read_text())
    assert report["failed_role"] == "PREFLIGHT" and "node node2" in report["reason"]
