"""perfsanity.run.preflight with real processes on 127.0.0.1: every task of every step is a real
``python3 -m perfsanity.run.preflight node`` process (one per "node" of its slice, told its node by
``SLURMD_NODENAME`` as srun does), the reach check opens and connects to real ports, and
:func:`run_preflight` reads their reports. Failures name the node and the check.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from perfsanity.common.processes import ProcessSet
from perfsanity.plan.launch import RoleStep
from perfsanity.run.preflight import PreflightFailed, PreflightPlan, PreflightStep, plan_for, run_preflight

REPO = Path(__file__).resolve().parents[2]
HOSTS = ("n0", "n1", "n2")
# one task per host of the slice, as srun -w H1,H2 -n 2 --ntasks-per-node=1 starts them
PER_HOST = 'i=0; for h in $STEP_HOSTS; do SLURMD_NODENAME=$h SLURM_PROCID=$i "$@" & i=$((i + 1)); done; wait'


def local_start(procs: ProcessSet, job_dir: Path, env: dict[str, str] | None = None, broken: str = ""):
    def start(name, hosts, argv):
        base = {**os.environ, "PERFSANITY_REPO": str(REPO), "PERFSANITY_HOST": "127.0.0.1",
                "STEP_HOSTS": " ".join(hosts), **(env or {})}
        base["PATH"] = f"{Path(sys.executable).parent}:{base['PATH']}"
        log = job_dir / "logs/preflight" / f"{name}.log"
        if broken and name == broken:  # the step never reaches its tasks (e.g. the container did not start)
            return procs.start(name, ["bash", "-c", "exit 7"], env=base, log_path=log)
        return procs.start(name, ["bash", "-c", PER_HOST, "step", *argv], env=base, log_path=log)
    return start


def tick() -> None:
    time.sleep(0.05)


def two_roles(timeout_s: float = 20, **kw) -> PreflightPlan:
    return PreflightPlan(timeout_s, (PreflightStep("GEN_0", (0, 1), 0), PreflightStep("CTX_0", (2,), 0)), **kw)


def test_all_checks_pass_and_each_node_reaches_the_others(tmp_path: Path) -> None:
    with ProcessSet() as procs:
        reports = run_preflight(two_roles(), HOSTS, tmp_path, start=local_start(procs, tmp_path), tick=tick)
    assert sorted(r["node"] for r in reports) == ["n0", "n1", "n2"]
    for r in reports:
        checks = {c["check"]: c for c in r["checks"]}
        assert [c["check"] for c in r["checks"]] == ["answers", "job dir writable", "GPUs visible",
                                                      "container starts", "node-to-node reach"]
        assert checks["job dir writable"]["status"] == "ok"
        assert checks["node-to-node reach"] == {"check": "node-to-node reach", "status": "ok",
                                                "detail": "reached 2 task(s) on 2 node(s)"}
        assert checks["GPUs visible"]["status"] == "skipped"
        assert (tmp_path / "preflight/nodes" / r["node"] / f"{r['role']}.{r['rank']}.probe").is_file()


def test_unwritable_job_dir_on_one_node_is_named(tmp_path: Path) -> None:
    (tmp_path / "preflight/nodes").mkdir(parents=True)
    (tmp_path / "preflight/nodes/n1").write_text("")  # a file where n1's directory goes: no write from n1
    started = time.monotonic()
    with ProcessSet() as procs, pytest.raises(PreflightFailed) as err:
        run_preflight(two_roles(), HOSTS, tmp_path, start=local_start(procs, tmp_path), tick=tick)
    assert err.value.message.startswith("preflight failed: node n1 (GEN_0): job dir writable: cannot write ")
    assert "node n1 (GEN_0): job dir writable" in err.value.details
    assert time.monotonic() - started < 15  # the other checks did not wait for the bound


def test_unreachable_peer_is_named(tmp_path: Path) -> None:
    # a fourth task on node n9 published a port nobody listens on (its node is unreachable)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    plan = PreflightPlan(10, two_roles().steps + (PreflightStep("ghost", (), 0),))

    def start(name, hosts, argv):
        if name == "preflight-ghost":  # publishes its address (after the last run's were cleared)
            path = tmp_path / "preflight/addr/ghost.0.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"node": "n9", "host": "127.0.0.1", "port": dead}))
        return inner(name, hosts, argv)

    with ProcessSet() as procs, pytest.raises(PreflightFailed) as err:
        inner = local_start(procs, tmp_path)
        run_preflight(plan, HOSTS, tmp_path, start=start, tick=tick)
    assert "node-to-node reach" in err.value.message
    assert f"node n9 (ghost.0 at 127.0.0.1:{dead})" in err.value.message


def test_a_step_without_report_names_the_check(tmp_path: Path) -> None:
    with ProcessSet() as procs, pytest.raises(PreflightFailed) as err:
        run_preflight(two_roles(container=True), HOSTS, tmp_path,
                      start=local_start(procs, tmp_path, broken="preflight-CTX_0"), tick=tick)
    assert err.value.message.startswith("preflight failed: node n2 (CTX_0): container starts: step exited with "
                                        "code 7 without a report")
    with ProcessSet() as procs, pytest.raises(PreflightFailed) as err:
        run_preflight(two_roles(), HOSTS, tmp_path, start=local_start(procs, tmp_path, broken="preflight-CTX_0"),
                      tick=tick)
    assert err.value.message.startswith("preflight failed: node n2 (CTX_0): answers: step exited with code 7")


def test_a_node_that_hangs_is_bounded(tmp_path: Path) -> None:
    def start(name, hosts, argv):
        if name == "preflight-CTX_0":
            return procs.start(name, ["sleep", "60"], env=dict(os.environ), log_path=tmp_path / "hang.log")
        return inner(name, hosts, argv)

    started = time.monotonic()
    with ProcessSet() as procs, pytest.raises(PreflightFailed) as err:
        inner = local_start(procs, tmp_path)
        run_preflight(two_roles(timeout_s=6), HOSTS, tmp_path, start=start, tick=tick)
    assert time.monotonic() - started < 15
    assert err.value.message.startswith("preflight failed: node n2 (CTX_0): answers: no report after ")
    assert "(bound: preflight.timeout_s=6s; step still running" in err.value.message


def test_gpus_checked_with_nvidia_smi(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/bash\necho 'GPU 0: Fake (UUID: GPU-0)'\necho 'GPU 1: Fake (UUID: GPU-1)'\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    plan = PreflightPlan(20, (PreflightStep("GEN_0", (0,), 2), PreflightStep("CTX_0", (1,), 4)))
    with ProcessSet() as procs, pytest.raises(PreflightFailed) as err:
        run_preflight(plan, HOSTS, tmp_path, start=local_start(procs, tmp_path, env), tick=tick)
    assert err.value.message.startswith("preflight failed: node n1 (CTX_0): GPUs visible: nvidia-smi -L lists "
                                        "2 GPU(s), the role needs 4")
    assert "node n0" not in err.value.details.split("\n---")[0]  # GEN_0 needs 2: it passed


def test_plan_for_a_role_plan() -> None:
    steps = (RoleStep("GEN_0", (0, 1), 16, 8, False, True), RoleStep("BENCHMARK", (0,), 1, 0, True, False))
    plan = plan_for(steps, timeout_s=30, container=True, needs_gpu=True, backend="trtllm")
    assert plan.steps == (PreflightStep("GEN_0", (0, 1), 4), PreflightStep("BENCHMARK", (0,), 0))
    assert plan.tasks == 3 and plan.container and plan.gpu_skip == ""
    off = plan_for(steps, timeout_s=30, container=False, needs_gpu=False, backend="dynamo-mocker")
    assert off.gpu_skip == "backend dynamo-mocker runs no GPU code" and off.steps[0].gpus_per_node == 0


def test_config_section(tmp_path: Path) -> None:
    import yaml

    from perfsanity.common.errors import ConfigError
    from perfsanity.jobs.batch import preflight_plan
    from perfsanity.spec.config import config_from_dict
    from perfsanity.spec.topology import build_topology

    raw = yaml.safe_load((REPO / "test_configs/disagg/perf/mocker-ctx2-gen2.yaml").read_text())
    config = config_from_dict(raw, name="m", source="m.yaml")
    assert (config.preflight.enabled, config.preflight.timeout_s) == (True, 30)  # on by default
    plan = preflight_plan(config, build_topology(config), ["--container-image=x"])
    assert plan is not None and plan.container and [s.role for s in plan.steps] == [
        "GEN_0", "GEN_1", "CTX_0", "CTX_1", "DISAGG_SERVER", "BENCHMARK"]
    off = config_from_dict({**raw, "preflight": {"enabled": False}}, name="m", source="m.yaml")
    assert preflight_plan(off, build_topology(off), []) is None
    with pytest.raises(ConfigError) as err:
        config_from_dict({**raw, "preflight": {"timeout_s": 61}}, name="m", source="m.yaml")
    assert "m.yaml" in str(err.value) and "preflight.timeout_s" in str(err.value)
    with pytest.raises(ConfigError) as err:
        config_from_dict({**raw, "preflight": {"timeout": 10}}, name="m", source="m.yaml")
    assert "preflight.timeout" in str(err.value)
