"""perfsanity.run.spawners: the argv each srun step gets (golden, per role, for the three L0 configs — the
same files the L0 launch.sh is checked against with a stub srun), and what the processes both spawners
start look like (environment, working dir, log, own session).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import pytest

from perfsanity.common.processes import ProcessSet
from perfsanity.jobs.batch import preflight_plan
from perfsanity.plan.launch import RoleStep, role_plan, step_srun_args
from perfsanity.plan.prepare import CONFIGS_ROOT, find_config
from perfsanity.run.preflight import task_argv
from perfsanity.run.spawners import LocalSpawner, SrunSpawner, role_env
from perfsanity.spec.config import Config, load_config
from perfsanity.spec.testlist import parse_test_id
from perfsanity.spec.topology import build_topology

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"
CONTAINER = ["--container-image=urm.nvidia.com/sw-tensorrt-docker/tensorrt-llm:pytorch-25.10-py3-x86_64",
             "--container-workdir=/home/svc/jobs/ws",
             "--container-mounts=/home/svc/jobs/ws:/home/svc/jobs/ws,/lustre/models:/models", "--mpi=pmix"]
PLAIN = ["--export=ALL", "--cpu-bind=none"]
# name: (test id as in an L0 test list, srun args file lines) — as tests/unit/test_launch.py's GOLDEN_CASES
CASES = {
    "trtllm-dsr1-1k1k": ("disagg_upload-e2e-gb200-deepseek-r1-fp4_1k1k_ctx2_dep4_gen1_dep16_mtp3", CONTAINER),
    "sglang-glm47-4p2d": ("disagg_upload-gen_only-gb200-glm-4.7-nvfp4_1k1k_sglang_4p2d", CONTAINER),
    "mocker-ctx1-gen1": ("disagg_upload-mocker-ctx1-gen1", PLAIN),
}
HOSTS = tuple(f"node{i}" for i in range(64))


def config_of(test_id: str) -> Config:
    sel = parse_test_id(test_id)
    return load_config(find_config(sel.config_name, sel.kind, [CONFIGS_ROOT]),
                       overrides={"benchmark.mode": sel.mode} if sel.mode else None)


def plan_of(test_id: str) -> tuple[RoleStep, ...]:
    config = config_of(test_id)
    return role_plan(config, build_topology(config))


@pytest.mark.parametrize("name", sorted(CASES))
def test_srun_argv_per_role_golden(name: str) -> None:
    test_id, srun_args = CASES[name]
    config = config_of(test_id)
    steps = role_plan(config, build_topology(config))
    spawner = SrunSpawner(Path("/TMP/job"), srun_args=step_srun_args(srun_args),
                          run_sh="/REPO/jenkins/scripts/slurm_run.sh",
                          install_sh="/REPO/jenkins/scripts/slurm_install.sh", environ={})
    total = 1 + max(n for s in steps for n in s.nodes)
    preflight = preflight_plan(config, build_topology(config), step_srun_args(srun_args))
    assert preflight is not None  # on by default
    got = [f"install: {shlex.join(spawner.install_argv(HOSTS[:total]))}"]  # started first, beside the preflight
    for p in preflight.steps:
        argv = spawner.preflight_argv(f"preflight-{p.role}", [HOSTS[n] for n in p.nodes],
                                      task_argv(preflight, p, Path("/TMP/job")))
        got.append(f"preflight: {shlex.join(argv)}")
    got += [f"{s.role}: {shlex.join(spawner.role_argv(s, [HOSTS[n] for n in s.nodes]))}" for s in steps]
    got = [line.replace("/TMP/", "<TMP>/").replace("/REPO/", "<REPO>/") for line in got]
    want = (GOLDEN / f"srun_l0_{name}.txt").read_text().splitlines()
    assert got == want


def test_role_plan_flags() -> None:
    steps = {s.role: s for s in plan_of(CASES["trtllm-dsr1-1k1k"][0])}
    assert steps["GEN_0"] == RoleStep("GEN_0", (0, 1, 2, 3), 16, 16, False, True, "pmix")  # one rank per GPU
    assert steps["DISAGG_SERVER"] == RoleStep("DISAGG_SERVER", (0,), 1, 0, True, False, "")
    assert steps["BENCHMARK"].overlap and not steps["BENCHMARK"].is_worker and not steps["BENCHMARK"].mpi
    mocker = {s.role: s for s in plan_of(CASES["mocker-ctx1-gen1"][0])}
    assert mocker["GEN_0"].tasks == 1 and mocker["GEN_0"].mpi == ""  # one task per node, no slurm.mpi


def test_srun_hosts_from_the_job_nodelist() -> None:
    env = {"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "n[01-03],gpu7", "SLURM_CONF": "/nonexistent/slurm.conf"}
    spawner = SrunSpawner(Path("/j"), srun_args=[], run_sh="r", install_sh="i", environ=env)
    assert spawner.hosts(2) == ("n01", "n02", "n03", "gpu7")
    outside = SrunSpawner(Path("/j"), srun_args=[], run_sh="r", install_sh="i", environ={})
    assert outside.hosts(1) == ()
    with pytest.raises(ValueError, match="SLURM_JOB_NODELIST"):
        SrunSpawner(Path("/j"), srun_args=[], run_sh="r", install_sh="i",
                    environ={**env, "SLURM_JOB_NODELIST": "n[1-"}).hosts(1)


ENV_DUMP = f"""#!/bin/bash
{sys.executable} -c 'import json, os, sys; print(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(),
    "env": dict(os.environ), "sid": os.getsid(0), "pid": os.getppid()}}))' "$@"
"""


def _dump(proc) -> dict:
    assert proc.popen.wait(timeout=30) == 0, proc.tail()
    line = [x for x in proc.log_path.read_text().splitlines() if x.startswith("{")][-1]
    return json.loads(line)


def test_srun_spawner_starts_srun_with_the_role_in_its_environment(tmp_path: Path) -> None:
    fake_srun = tmp_path / "srun"
    fake_srun.write_text(ENV_DUMP)
    fake_srun.chmod(0o755)
    job = tmp_path / "job"
    env = {"PATH": os.environ["PATH"], "SLURM_JOB_ID": "7", "DISAGG_SERVING_TYPE": "stale"}
    spawner = SrunSpawner(job, srun_args=["--export=ALL"], run_sh="/r.sh", install_sh="/i.sh", environ=env,
                          srun=str(fake_srun))
    step = RoleStep("CTX_0", (1,), 4, 4, False, True, "pmix")
    with ProcessSet() as procs:
        role = _dump(spawner.start_role(procs, step, ["n1"]))
        install = _dump(spawner.start_install(procs, ["n0", "n1"]))
    assert role["argv"] == ["--export=ALL", "-N", "1", "-n", "4", "-w", "n1", "--kill-on-bad-exit=1",
                            "--job-name=CTX_0", "-o", str(job / "logs/CTX_0.log"), "--mpi=pmix", "bash", "/r.sh"]
    assert role["env"]["DISAGG_SERVING_TYPE"] == "CTX_0" and role["env"]["SLURM_JOB_ID"] == "7"
    assert role["cwd"] == str(job)
    assert "DISAGG_SERVING_TYPE" not in install["env"]  # the install step is no role
    assert install["argv"][-2:] == ["bash", "/i.sh"] and "--ntasks-per-node=1" in install["argv"]
    # srun's own messages land beside the steps' logs, not in them
    assert (job / "logs/srun/CTX_0.log").is_file() and (job / "logs/srun/install.log").is_file()


def test_local_spawner_runs_the_role_script_in_its_own_session(tmp_path: Path) -> None:
    run_sh = tmp_path / "run.sh"
    run_sh.write_text(ENV_DUMP)
    exports = {"PERFSANITY_REPO": "/repo", "PERFSANITY_RUN_SH": str(run_sh), "PERFSANITY_TEST_ID": "t"}
    base = {"PATH": os.environ["PATH"], "PYTHONPATH": "/other", "SLURM_JOB_ID": "9", "SLURM_PROCID": "3"}
    job = tmp_path / "job"
    spawner = LocalSpawner(job, exports, base_env=base)
    assert spawner.hosts(3) == ("localhost",) * 3
    with ProcessSet() as procs:
        proc = spawner.start_role(procs, RoleStep("GEN_0", (0,), 1, 2, True, True), ["localhost"])
        seen = _dump(proc)
    assert proc.log_path == job / "logs/GEN_0.log"
    assert seen["cwd"] == str(job)
    env = seen["env"]
    assert env["DISAGG_SERVING_TYPE"] == "GEN_0" and env["PERFSANITY_JOB_ID"] == "local"
    assert env["PYTHONPATH"] == "/repo" + os.pathsep + "/other" and env["PERFSANITY_TEST_ID"] == "t"
    assert "SLURM_JOB_ID" not in env and "SLURM_PROCID" not in env
    assert seen["sid"] == seen["pid"]  # bash leads its own session: stopping it stops its whole group


def test_role_env_is_the_job_exports_plus_the_role() -> None:
    env = role_env({"PERFSANITY_REPO": "/r", "X": "1"}, "BENCHMARK", base={"SLURM_STEP_ID": "0", "KEEP": "k"})
    assert env == {"PERFSANITY_REPO": "/r", "X": "1", "KEEP": "k", "DISAGG_SERVING_TYPE": "BENCHMARK",
                   "PERFSANITY_JOB_ID": "local", "PYTHONPATH": "/r", "PERFSANITY_PYTHON": sys.executable}
