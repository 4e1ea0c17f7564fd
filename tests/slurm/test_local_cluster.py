"""Integration tests against the real multi-node SLURM started by ``scripts/local_slurm/start.sh``.

Start the cluster first (``scripts/local_slurm/start.sh``). Without a reachable cluster these
tests are skipped, except under ``CI=true``, where they fail: CI must not pass vacuously.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

from perfsanity.jobs import slurm as jobs
from perfsanity.run.context import parse_hostlist

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

REPO_ROOT = Path(__file__).resolve().parents[2]
JOB_TIMEOUT_S = 60.0

# the ``cluster`` fixture (skip without a cluster, fail under CI=true) lives in conftest.py


def _write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\nset -u\n" + body)
    path.chmod(0o755)
    return path


def _job_env() -> dict[str, str]:
    """Environment for sbatch: jobs inherit it (--export=ALL), so steps can import perfsanity."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _marker_processes(marker: str) -> list[str]:
    """Live (non-zombie) processes whose argv contains ``marker``, read from /proc.

    (``ps`` may cut long command lines to the terminal width; zombies have an empty cmdline.)
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # exited meanwhile
        if marker in argv and state != "Z":
            found.append(f"{entry.name} {argv.strip()}")
    return found


def test_four_node_job_places_steps_on_requested_nodes(cluster, tmp_path: Path) -> None:
    nodes = cluster.nodes
    # one single-node step per node, in reverse order, each pinned with -w
    pinned = "\n".join(
        f"srun -N1 -n1 -w {node} bash -c 'echo \"$SLURMD_NODENAME\"' > {tmp_path}/placed.{node} || exit 10"
        for node in reversed(nodes)
    )
    context_probe = (
        "import json, os; from perfsanity.run.context import SlurmContext; "
        "c = SlurmContext.from_env(os.environ); "
        "print(json.dumps({'node': c.node_name, 'nodes': list(c.nodelist), 'procid': c.procid, "
        "'localid': c.localid, 'nnodes': c.nnodes, 'ntasks': c.ntasks, 'step': c.step_id, "
        "'job': c.job_id, 'gpus': list(c.gpus)}))"
    )
    script = _write_script(
        tmp_path / "placement.sbatch",
        f"{pinned}\n"
        f"srun -N{len(nodes)} -n{len(nodes)} --ntasks-per-node=1 {sys.executable} -c "
        f'"{context_probe}" > {tmp_path}/contexts.jsonl || exit 11\n',
    )
    extra = ["-N", str(len(nodes)), "--ntasks-per-node=1", "-w", ",".join(nodes), "-t", "5"]
    extra += ["-o", str(tmp_path / "job.out")]
    if cluster.gpus_per_node:
        extra.append(f"--gpus-per-node={cluster.gpus_per_node}")
    job_id = jobs.submit(script, workdir=tmp_path, extra_args=extra, env=_job_env())
    info = jobs.wait_for_job(job_id, timeout_s=JOB_TIMEOUT_S, poll_s=0.3)
    output = (tmp_path / "job.out").read_text()
    assert info.state == "COMPLETED", f"{info}\n{output}"
    assert info.exit_code == 0
    assert parse_hostlist(info.nodelist) == list(nodes)

    for node in nodes:
        assert (tmp_path / f"placed.{node}").read_text().strip() == node

    contexts = [json.loads(line) for line in (tmp_path / "contexts.jsonl").read_text().splitlines()]
    assert sorted(c["procid"] for c in contexts) == list(range(len(nodes)))
    assert sorted(c["node"] for c in contexts) == sorted(nodes)
    for c in contexts:
        assert c["job"] == job_id
        assert c["nodes"] == list(nodes)
        assert (c["nnodes"], c["ntasks"], c["localid"]) == (len(nodes), len(nodes), 0)
        assert c["step"] is not None
        if cluster.gpus_per_node:
            assert c["gpus"] == [str(i) for i in range(cluster.gpus_per_node)]


def test_failing_step_propagated_by_batch_script_fails_job(cluster, tmp_path: Path) -> None:
    script = _write_script(
        tmp_path / "fail.sbatch",
        f"srun -N1 -n1 -w {cluster.nodes[1]} bash -c 'echo step-ran; exit 3'\n"
        "rc=$?\n"
        'echo "step rc=$rc"\n'
        'exit "$rc"\n',
    )
    out = tmp_path / "fail.out"
    job_id = jobs.submit(script, workdir=tmp_path, extra_args=["-N2", "-t", "5", "-o", str(out)])
    streamed: list[str] = []
    info = jobs.wait_for_job(job_id, timeout_s=JOB_TIMEOUT_S, poll_s=0.3, stream_log=out, log_sink=streamed.append)
    assert info.state == "FAILED", info
    assert info.exit_code == 3
    assert info.reason == "NonZeroExitCode"
    assert not jobs.is_infrastructure_failure(info)
    assert "step-ran" in streamed and "step rc=3" in streamed, streamed
    assert jobs.job_state(job_id) == info


def test_cancel_mid_run_leaves_no_process(cluster, tmp_path: Path) -> None:
    marker = f"perfsanity-cancel-{uuid.uuid4().hex[:12]}"
    script = _write_script(
        tmp_path / "cancel.sbatch",
        f"srun -N2 -n2 --ntasks-per-node=1 {sys.executable} -c 'import time; time.sleep(300)' "
        f"{marker} &\n"
        f"bash -c 'sleep 300; true' {marker}-batch\n",
    )
    job_id = jobs.submit(script, workdir=tmp_path, extra_args=["-N2", "-t", "5", "-o", str(tmp_path / "c.out")])
    try:
        deadline = time.monotonic() + 30
        while len(_marker_processes(marker)) < 3:  # 2 step tasks + the batch script's bash
            assert time.monotonic() < deadline, f"job {job_id} did not start its processes: {jobs.job_state(job_id)}"
            time.sleep(0.2)
        assert jobs.job_state(job_id).state == "RUNNING"
        jobs.cancel(job_id)
        info = jobs.wait_for_job(job_id, timeout_s=30, poll_s=0.3)
    finally:
        jobs.cancel(job_id)
    assert info.state == "CANCELLED", info
    # the exit code of a cancelled job is not reliable (0:15, 143:0 and 0:0 all seen here)
    assert not jobs.is_infrastructure_failure(info)
    deadline = time.monotonic() + 20  # KillWait=5 in start.sh's slurm.conf
    while (left := _marker_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not left, f"processes of cancelled job {job_id} still running: {left}"


def test_wait_for_job_timeout_names_job_and_leaves_it_running(cluster, tmp_path: Path) -> None:
    script = _write_script(tmp_path / "slow.sbatch", "sleep 120\n")
    job_id = jobs.submit(script, workdir=tmp_path, extra_args=["-N1", "-t", "5", "-o", str(tmp_path / "s.out")])
    try:
        started = time.monotonic()
        with pytest.raises(jobs.JobWaitTimeout) as excinfo:
            jobs.wait_for_job(job_id, timeout_s=2.0, poll_s=0.3)
        waited = time.monotonic() - started
        exc = excinfo.value
        assert exc.job_id == job_id
        assert job_id in str(exc) and "2s" in str(exc)
        assert exc.last_state in {"PENDING", "RUNNING"}
        assert exc.last_state in str(exc)
        assert 2.0 <= waited < 10.0
        # not cancelled by the wait itself
        assert jobs.job_state(job_id).state in {"PENDING", "RUNNING"}
    finally:
        jobs.cancel(job_id)
    assert jobs.wait_for_job(job_id, timeout_s=30, poll_s=0.3).state == "CANCELLED"


def test_sbatch_error_carries_stderr(cluster, tmp_path: Path) -> None:
    script = _write_script(tmp_path / "nope.sbatch", "true\n")
    with pytest.raises(jobs.SbatchError) as excinfo:
        jobs.submit(script, workdir=tmp_path, extra_args=["-p", "no-such-partition"])
    assert "invalid partition" in str(excinfo.value).lower()
    assert excinfo.value.returncode != 0
