"""Dynamo laid out for a cluster, on the real local SLURM: the job's own etcd + NATS, two frontends
behind nginx (``test_configs/disagg/perf/mocker-ctx2-gen2-etcd-nats.yaml``).

* the shipped 2 prefill + 2 decode config completes on four nodes; the benchmark went through nginx
  and both frontends served requests; every Dynamo process used the job's etcd and NATS;
* the same config submitted twice at once (servers of 2 fake GPUs, so both jobs fit on the same four
  nodes together) completes twice, each job on etcd/NATS/nginx ports of its own;
* killing etcd or NATS in the middle of the benchmark fails the job within 30 s, and junit.xml names
  the service with its log tail.

Needs ``scripts/local_slurm/start.sh`` (skipped without it, failed under CI=true).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from junitparser import JUnitXml

from perfsanity.jobs import slurm as jobs

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "test_configs" / "disagg" / "perf" / "mocker-ctx2-gen2-etcd-nats.yaml"
LONG = Path(__file__).resolve().parent / "configs" / "disagg" / "perf" / "slurm-infra-long.yaml"
SMALL_BENCH = ("--set", "benchmark.concurrency_list=2 4", "--set", "benchmark.multi_round=4",
               "--set", "benchmark.input_length=64", "--set", "benchmark.output_length=16",
               "--set", "benchmark.client=perfsanity")  # the lean client: what is tested here is the job's services
#: two jobs at once on four nodes of 4 fake GPUs: servers of 2 GPUs, one per node
HALF_NODES = ("--set", "hardware.gpus_per_node=2", "--set", "worker_config.ctx.tensor_parallel_size=2",
              "--set", "worker_config.gen.tensor_parallel_size=2")


def _job_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    return tmp_path_factory.mktemp("infra") / f"{name}-{uuid.uuid4().hex[:10]}"


def _submit_and_wait(s, job_dir: Path, *extra: str, timeout_s: float = 420):
    return s.run(s.submit_cmd(SHIPPED, job_dir, "--submit", "--wait", *extra), env=s.env(job_dir.parent),
                 timeout_s=timeout_s, log=job_dir.parent / "submit.log")


def _frontend_requests(job_dir: Path) -> dict[str, int]:
    """Completions each frontend's log says it received (Dynamo's ``request received`` line)."""
    out = {}
    for log in sorted((job_dir / "logs").glob("DISAGG_SERVER.server.*.log")):
        out[log.name] = sum(1 for line in log.read_text(errors="replace").splitlines()
                            if "request received" in line and "/v1/completions" in line)
    return out


def _nginx_upstreams(job_dir: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in (job_dir / "nginx" / "access.log").read_text().splitlines():
        m = re.search(r'"POST /v1/completions [^"]*" 200 \S+ upstream=(\S+)$', line)
        if m:
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


def _assert_completed(job_dir: Path, proc) -> dict:
    assert proc.returncode == 0, f"submit.py --wait exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    recorded = json.loads((job_dir / "jobid.json").read_text())
    assert (recorded["state"], recorded["exit_code"]) == ("COMPLETED", 0), recorded
    results = json.loads((job_dir / "results.json").read_text())
    assert results["status"] == "passed", results.get("failures")
    for r in results["results"]:
        assert r["completed"] == r["requested"] > 0 and r["failed"] == 0, r
    suites = JUnitXml.fromfile(str(job_dir / "junit.xml"))
    assert suites.failures == 0 and suites.errors == 0, (job_dir / "junit.xml").read_text()[:3000]
    return results


def _values(job_dir: Path) -> dict[str, str]:
    rdv = job_dir / "rendezvous"
    return {name: json.loads((rdv / f"{name}.value").read_text())["value"] for name in ("etcd", "nats")}


# ------------------------------------------------------------------ a. the shipped 2 + 2 config


@pytest.fixture(scope="module")
def shipped_run(cluster, s, tmp_path_factory):
    job_dir = _job_dir(tmp_path_factory, "etcd-nats")
    try:
        yield {"dir": job_dir, "proc": _submit_and_wait(s, job_dir, *SMALL_BENCH)}
    finally:
        s.cancel_quietly(s.job_id_of(job_dir))


@pytest.mark.timeout(480)
def test_shipped_etcd_nats_config_completes_through_nginx(shipped_run, s):
    job_dir = shipped_run["dir"]
    results = _assert_completed(job_dir, shipped_run["proc"])
    assert [r["concurrency"] for r in results["results"]] == [2, 4]
    requests = sum(r["requested"] for r in results["results"])

    # the benchmark's front door is nginx, in front of the two frontends
    door = json.loads((job_dir / "rendezvous" / "DISAGG_SERVER.addr").read_text())
    conf = (job_dir / "nginx" / "nginx.conf").read_text()
    assert f"listen {door['host']}:{door['port']} " in conf
    assert len(door["backends"]) == 2 and all(f"server {b};" in conf for b in door["backends"])
    bench_log = (job_dir / "logs" / "BENCHMARK.log").read_text()
    assert f"http://{door['host']}:{door['port']}" in bench_log

    # nginx sent the measured requests to both frontends, and both logged them
    upstreams = _nginx_upstreams(job_dir)
    assert set(upstreams) == set(door["backends"]), upstreams
    assert sum(upstreams.values()) >= requests
    per_frontend = _frontend_requests(job_dir)
    assert len(per_frontend) == 2 and all(n > 0 for n in per_frontend.values()), per_frontend
    assert sum(per_frontend.values()) >= sum(upstreams.values())  # plus any readiness probe nginx did not 200

    # every Dynamo process used this job's etcd and NATS
    values = _values(job_dir)
    assert values["etcd"].startswith("http://127.0.0.1:") and values["nats"].startswith("nats://127.0.0.1:")
    for role in ("CTX_0", "CTX_1", "GEN_0", "GEN_1"):
        log = (job_dir / "logs" / f"{role}.server.log").read_text(errors="replace")
        assert f"Etcd({values['etcd']})" in log, f"{role} did not use the job's etcd"
        assert "NATS request plane" in log, f"{role} did not use the NATS request plane"
    for name in ("etcd", "nats", "nginx"):
        assert (job_dir / "logs" / f"DISAGG_SERVER.{name}.log").is_file()

    # per-node monitors: a CPU/memory log for each of the four worker nodes, a GPU reason line (no
    # nvidia-smi here), and the plot in report.html
    nodes = s.job_nodes(s.job_id_of(job_dir))
    for node in nodes:
        cpu = (job_dir / "logs" / f"{node}.cpu.csv").read_text().splitlines()
        assert len(cpu) >= 3, f"{node}: {cpu}"
        assert "nvidia-smi" in (job_dir / "logs" / f"{node}.gpu.txt").read_text()
    assert "worker nodes: CPU and memory during the benchmark" in (job_dir / "report.html").read_text()


@pytest.mark.timeout(480)
def test_shipped_run_leaves_no_process(shipped_run, s):
    left = s.wait_no_processes(str(shipped_run["dir"]), timeout_s=30)
    assert not left, "processes of the finished job still running:\n" + "\n".join(left)


# ------------------------------------------------------------------ b. the same config twice at once


@pytest.mark.timeout(600)
def test_same_config_twice_at_once_completes_twice(cluster, s, tmp_path_factory):
    dirs = [_job_dir(tmp_path_factory, f"twice-{i}") for i in range(2)]
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            procs = list(pool.map(lambda d: _submit_and_wait(s, d, *SMALL_BENCH, *HALF_NODES, timeout_s=540), dirs))
        for job_dir, proc in zip(dirs, procs, strict=True):
            _assert_completed(job_dir, proc)
        ids = [s.job_id_of(d) for d in dirs]
        raw = [s.scontrol_job(i) for i in ids]
        # both ran at the same time, on the same four nodes
        assert s.seconds_between(raw[1]["StartTime"], raw[0]["EndTime"]) > 0, raw
        assert s.seconds_between(raw[0]["StartTime"], raw[1]["EndTime"]) > 0, raw
        assert sorted(s.job_nodes(ids[0])) == sorted(s.job_nodes(ids[1])) and len(s.job_nodes(ids[0])) == 4
        # ... on ports of their own
        ports = []
        for job_dir in dirs:
            door = json.loads((job_dir / "rendezvous" / "DISAGG_SERVER.addr").read_text())
            ports.append({*(int(v.rsplit(":", 1)[1]) for v in _values(job_dir).values()), door["port"],
                          *(int(b.rsplit(":", 1)[1]) for b in door["backends"])})
            assert all(n > 0 for n in _frontend_requests(job_dir).values())
        assert not ports[0] & ports[1], f"jobs shared ports {ports[0] & ports[1]}"
    finally:
        for job_dir in dirs:
            s.cancel_quietly(s.job_id_of(job_dir))


# ------------------------------------------------------------------ c. etcd or NATS killed mid-run


def _service_pid(s, job_dir: Path, job_id: str, binary: str) -> int:
    for line in s.job_processes(str(job_dir), job_id):
        pid, _, argv = line.partition(" ")
        if argv.split(" ", 1)[0].endswith(binary):
            return int(pid)
    return 0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("service,binary", [("etcd", "etcd"), ("nats", "nats-server")])
def test_killed_service_fails_job_fast_naming_it(cluster, s, tmp_path_factory, service, binary):
    job_dir = _job_dir(tmp_path_factory, f"kill-{service}")
    try:
        proc = s.run(s.submit_cmd(LONG, job_dir, "--submit"), env=s.env(job_dir.parent), timeout_s=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        job_id = s.job_id_of(job_dir)

        s.wait_first_result(job_dir, job_id, timeout_s=200)
        assert not (job_dir / "rendezvous" / "benchmark.status").exists(), "benchmark already over: not mid-run"
        pid = _service_pid(s, job_dir, job_id, binary)
        assert pid, f"no {binary} process of job {job_id}: {s.job_processes(str(job_dir), job_id)}"
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        info = jobs.wait_for_job(job_id, timeout_s=60, poll_s=0.2)
        took = time.monotonic() - killed
        assert info.state == "FAILED" and info.exit_code != 0, info
        assert took <= 30, f"job {job_id} ended {took:.1f}s after {service} was killed"

        # junit.xml is written by submit-side collection; run it as --wait would have
        coll = s.run([sys.executable, "-m", "perfsanity", "collect", str(job_dir)], env=s.env(job_dir.parent),
                     timeout_s=120)
        suites = JUnitXml.fromfile(str(job_dir / "junit.xml"))
        cases = {case.name: case for suite in suites for case in suite}
        assert "DISAGG_SERVER" in cases, (sorted(cases), coll.stdout[-2000:])
        failure = cases["DISAGG_SERVER"].result[0]
        assert f"DISAGG_SERVER {service} died" in failure.message, failure.message
        service_log = (job_dir / "logs" / f"DISAGG_SERVER.{service}.log").read_text(errors="replace")
        last = [ln for ln in service_log.splitlines() if ln.strip()][-1]
        assert last.strip()[:120] in (failure.text or ""), "junit lacks the service's log tail"
        left = s.wait_no_processes(str(job_dir), timeout_s=30)
        assert not left, f"processes of failed job {job_id} still running:\n" + "\n".join(left)
    finally:
        s.cancel_quietly(s.job_id_of(job_dir))
