"""Unit tests for perfsanity.run.context: host list parsing and SlurmContext.from_env.

The environments below were captured from the local 4-node cluster (scripts/local_slurm)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import perfsanity.run.context as slurm_env
from perfsanity.run.context import SlurmContext, expand_hostlist, parse_hostlist

# rank 3 of `srun -N2 -n4 --ntasks-per-node=2` inside `sbatch -N2 --gpus-per-node=2` (trimmed)
STEP_ENV = {
    "CUDA_VISIBLE_DEVICES": "0,1",
    "SLURMD_NODENAME": "node2",
    "SLURM_CLUSTER_NAME": "perfsanity",
    "SLURM_CONF": "/tmp/perfsanity-slurm/etc/slurm.conf",
    "SLURM_CPUS_ON_NODE": "2",
    "SLURM_GPUS_ON_NODE": "2",
    "SLURM_GTIDS": "2,3",
    "SLURM_JOBID": "11",
    "SLURM_JOB_GPUS": "0,1",
    "SLURM_JOB_ID": "11",
    "SLURM_JOB_NODELIST": "node[1-2]",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_LOCALID": "1",
    "SLURM_NNODES": "2",
    "SLURM_NODEID": "1",
    "SLURM_NODELIST": "node[1-2]",
    "SLURM_NPROCS": "4",
    "SLURM_NTASKS": "4",
    "SLURM_PROCID": "3",
    "SLURM_STEPID": "0",
    "SLURM_STEP_GPUS": "0,1",
    "SLURM_STEP_ID": "0",
    "SLURM_STEP_NODELIST": "node[1-2]",
    "SLURM_STEP_NUM_NODES": "2",
    "SLURM_STEP_NUM_TASKS": "4",
    "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
    "SLURM_TASKS_PER_NODE": "2(x2)",
}

# the batch script of `sbatch -N4 --ntasks-per-node=1 --gpus-per-node=4` (trimmed): no step id
BATCH_ENV = {
    "CUDA_VISIBLE_DEVICES": "0,1,2,3",
    "SLURMD_NODENAME": "node1",
    "SLURM_JOBID": "1",
    "SLURM_JOB_ID": "1",
    "SLURM_JOB_NODELIST": "node[1-4]",
    "SLURM_JOB_NUM_NODES": "4",
    "SLURM_LOCALID": "0",
    "SLURM_NNODES": "4",
    "SLURM_NODEID": "0",
    "SLURM_NODELIST": "node[1-4]",
    "SLURM_NPROCS": "4",
    "SLURM_NTASKS": "4",
    "SLURM_PROCID": "0",
}


@pytest.mark.parametrize(
    ("expr", "hosts"),
    [
        ("node1", ["node1"]),
        ("node[1-3,5],other", ["node1", "node2", "node3", "node5", "other"]),
        ("node[1-4]", ["node1", "node2", "node3", "node4"]),
        ("n[8-11]", ["n8", "n9", "n10", "n11"]),
        ("n[01-03,7]", ["n01", "n02", "n03", "n7"]),
        ("c[09-11]", ["c09", "c10", "c11"]),
        ("a,b[1],c", ["a", "b1", "c"]),
        ("r[1-2]-n[01-02]", ["r1-n01", "r1-n02", "r2-n01", "r2-n02"]),
        ("gpu-a[1-2]b[3-4]", ["gpu-a1b3", "gpu-a1b4", "gpu-a2b3", "gpu-a2b4"]),
        ("pre[1-2]suffix", ["pre1suffix", "pre2suffix"]),
        ("dgx-h100-[001-002],login", ["dgx-h100-001", "dgx-h100-002", "login"]),
        ("node[3,1]", ["node3", "node1"]),  # order kept as written, like scontrol
        ("  node[1-2]  ", ["node1", "node2"]),
        ("", []),
    ],
)
def test_parse_hostlist(expr: str, hosts: list[str]) -> None:
    assert parse_hostlist(expr) == hosts


@pytest.mark.parametrize(
    "bad",
    ["node[1-3", "node1-3]", "node[a-b]", "node[3-1]", "node[[1]]", "a,,b", "node[]", "node[1-]"],
)
def test_parse_hostlist_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError, match="host list"):
        parse_hostlist(bad)


def test_from_env_outside_slurm_is_none() -> None:
    assert SlurmContext.from_env({}) is None
    assert SlurmContext.from_env({"PATH": "/usr/bin", "SLURM_CONF": "/etc/slurm.conf"}) is None


def test_from_env_in_a_step() -> None:
    ctx = SlurmContext.from_env(STEP_ENV, expand=parse_hostlist)
    assert ctx == SlurmContext(
        job_id="11",
        step_id="0",
        node_name="node2",
        nodelist=("node1", "node2"),
        job_nodelist=("node1", "node2"),
        procid=3,
        localid=1,
        nnodes=2,
        ntasks=4,
        gpus=("0", "1"),
    )
    assert ctx.in_step and not ctx.is_leader


def test_from_env_in_the_batch_script() -> None:
    ctx = SlurmContext.from_env(BATCH_ENV, expand=parse_hostlist)
    assert ctx is not None
    assert ctx.step_id is None and not ctx.in_step
    assert ctx.nodelist == ctx.job_nodelist == ("node1", "node2", "node3", "node4")
    assert (ctx.nnodes, ctx.ntasks, ctx.procid, ctx.localid) == (4, 4, 0, 0)
    assert ctx.gpus == ("0", "1", "2", "3")
    assert ctx.is_leader


def test_step_nodelist_wins_over_job_nodelist() -> None:
    env = {
        **BATCH_ENV,
        "SLURM_STEP_ID": "2",
        "SLURM_STEP_NODELIST": "node[2,4]",
        "SLURM_STEP_NUM_NODES": "2",
        "SLURM_STEP_NUM_TASKS": "2",
        "SLURM_NNODES": "2",
    }
    ctx = SlurmContext.from_env(env, expand=parse_hostlist)
    assert ctx is not None
    assert ctx.nodelist == ("node2", "node4")
    assert ctx.job_nodelist == ("node1", "node2", "node3", "node4")
    assert (ctx.nnodes, ctx.ntasks) == (2, 2)


def test_from_env_minimal_and_odd_values() -> None:
    ctx = SlurmContext.from_env(
        {"SLURM_JOBID": "42", "SLURM_PROCID": "x", "CUDA_VISIBLE_DEVICES": " GPU-aa , GPU-bb ,"},
        expand=parse_hostlist,
    )
    assert ctx == SlurmContext(job_id="42", gpus=("GPU-aa", "GPU-bb"))
    assert SlurmContext.from_env({"SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": ""}) == SlurmContext(job_id="7")


def test_from_env_names_the_bad_variable() -> None:
    with pytest.raises(ValueError, match="SLURM_JOB_NODELIST"):
        SlurmContext.from_env({"SLURM_JOB_ID": "1", "SLURM_JOB_NODELIST": "node[1-"}, expand=parse_hostlist)


def test_context_is_frozen() -> None:
    ctx = SlurmContext(job_id="1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.job_id = "2"  # type: ignore[misc]


def test_expand_hostlist_falls_back_without_scontrol(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slurm_env.shutil, "which", lambda name: None)
    calls: list[object] = []
    monkeypatch.setattr(slurm_env.subprocess, "run", lambda *a, **k: calls.append(a))
    assert expand_hostlist("node[1-2]") == ["node1", "node2"]
    assert calls == []


def test_expand_hostlist_uses_scontrol_and_its_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, object] = {}

    def fake_run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        seen["argv"] = argv
        seen["conf"] = kwargs["env"]["SLURM_CONF"]  # type: ignore[index]
        return subprocess.CompletedProcess(argv, 0, "node1\nnode2\n", "")

    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=x\n")
    monkeypatch.setattr(slurm_env.shutil, "which", lambda name: "/usr/bin/scontrol")
    monkeypatch.setattr(slurm_env.subprocess, "run", fake_run)
    assert expand_hostlist("node[1-2]", env={"SLURM_CONF": str(conf)}) == ["node1", "node2"]
    assert seen == {"argv": ["scontrol", "show", "hostnames", "node[1-2]"], "conf": str(conf)}


def test_expand_hostlist_skips_scontrol_without_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(slurm_env, "DEFAULT_SLURM_CONF", str(tmp_path / "absent.conf"))
    monkeypatch.delenv("SLURM_CONF", raising=False)
    monkeypatch.setattr(slurm_env.shutil, "which", lambda name: "/usr/bin/scontrol")
    monkeypatch.setattr(slurm_env.subprocess, "run", lambda *a, **k: pytest.fail("scontrol run"))
    assert expand_hostlist("node[1-2]") == ["node1", "node2"]
    assert expand_hostlist("node[1-2]", env={"SLURM_CONF": str(tmp_path / "nope")}) == ["node1", "node2"]


@pytest.mark.parametrize(
    "failure",
    [
        subprocess.CompletedProcess(["scontrol"], 1, "", "scontrol: fatal: Unable to process configuration file"),
        subprocess.TimeoutExpired(["scontrol"], 5.0),
        FileNotFoundError("scontrol"),
    ],
)
def test_expand_hostlist_falls_back_when_scontrol_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, failure: object
) -> None:
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=x\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **kwargs: object) -> object:
        calls.append(argv)
        if isinstance(failure, BaseException):
            raise failure
        return failure

    monkeypatch.setattr(slurm_env.shutil, "which", lambda name: "/usr/bin/scontrol")
    monkeypatch.setattr(slurm_env.subprocess, "run", fake_run)
    assert expand_hostlist("n[1-2],x") == ["n1", "n2", "x"]
    assert len(calls) == 1


def test_expand_hostlist_rejects_malformed_before_scontrol(monkeypatch: pytest.MonkeyPatch) -> None:
    # real scontrol prints "node]" for "node[1-3": the parser must reject it first
    monkeypatch.setattr(slurm_env.shutil, "which", lambda name: "/usr/bin/scontrol")
    monkeypatch.setattr(slurm_env.subprocess, "run", lambda *a, **k: pytest.fail("scontrol run"))
    with pytest.raises(ValueError):
        expand_hostlist("node[1-3")


def _slurm_conf() -> str | None:
    conf = os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")
    return conf if os.path.isfile(conf) else None


# scontrol needs a slurm.conf even for "show hostnames" (without one it retries for 60 s)
@pytest.mark.skipif(
    shutil.which("scontrol") is None or _slurm_conf() is None,
    reason="scontrol or a slurm.conf not available",
)
@pytest.mark.parametrize("expr", ["node[01-03,7],gpu-a[1-2]b[3-4],x", "n[8-11]", "r[1-2]-n[01-2]"])
def test_parser_agrees_with_real_scontrol(expr: str) -> None:
    try:
        proc = subprocess.run(
            ["scontrol", "show", "hostnames", expr],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("scontrol did not answer within 10s")
    if proc.returncode != 0:
        pytest.skip(f"scontrol unusable here: {proc.stderr.strip()}")
    assert parse_hostlist(expr) == proc.stdout.split()
