"""A local job whose launcher goes away: SIGHUP (the terminal closed), SIGTERM or kill -9 to
``submit.py --local`` while its servers run leaves none of the job's processes after 10 s; and a full
local job with planted secrets writes none of them into its job dir or the history DB.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

# a benchmark that outlasts the test; the lean client, as what is tested here is the harness, not the client
LONG = ("benchmark.concurrency_list=1", "benchmark.multi_round=10000", "timeouts.client_per_concurrency=600",
        "benchmark.client=perfsanity")


def wait_for_servers(job, timeout_s: float = 150) -> None:
    job.wait_for_files(job.out / "rendezvous/DISAGG_SERVER.addr", job.out / "logs/BENCHMARK.log", timeout_s=timeout_s,
                       what="its servers were up")


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_launcher_gone_leaves_no_process(sig: signal.Signals, jobs, e2e) -> None:
    job = jobs.start(*LONG)
    wait_for_servers(job)
    before = e2e.processes_of(jobs.marker, job.out)
    assert len(before) >= 4, e2e.describe(before)  # roles and their servers
    os.kill(job.proc.pid, sig)  # the launcher only, as a closed terminal or an OOM kill would
    job.proc.wait(timeout=60)
    deadline = time.monotonic() + 10
    left = e2e.processes_of(jobs.marker, job.out)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = e2e.processes_of(jobs.marker, job.out)
    assert not left, f"{len(left)} process(es) of the job 10 s after {sig.name} to the launcher:\n" + e2e.describe(left)
    if sig != signal.SIGKILL:  # a launcher that could react said why
        assert f"job received {sig.name}" in job.output(), job.output()[-3000:]


HF = "hf_" + "T" * 30
PGPASS = "pg-secret-5d1e"
BUILD_PASS = "build-secret-0b9a"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_no_planted_secret_in_job_dir_history_or_reports(jobs, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BUILD_URL", f"https://bot:{BUILD_PASS}@ci.example/job/9/")  # Jenkins' credentials
    run = jobs.run("benchmark.concurrency_list=1",
                   f"environment.worker_env_var=DYN_LOG=info PGPASS={PGPASS} HF_TOKEN={HF}",
                   f"metadata.benchmark_type=128i32o-{HF}", timeout_s=240)
    assert run.returncode == 0, run.stdout[-4000:]
    files = [p for p in run.out.rglob("*") if p.is_file()]
    names = {p.relative_to(run.out).as_posix() for p in files}
    for expected in ("config.resolved.yaml", "job.json", "job_meta.json", "results.json", "junit.xml",
                     "logs/BENCHMARK.log", "logs/GEN_0.log"):
        assert expected in names, sorted(names)
    assert any(n.startswith("config/") for n in names) and any(n.startswith("report") for n in names), sorted(names)
    history = tmp_path / "history.sqlite"
    assert history.is_file()
    for path in [*files, history]:
        body = path.read_bytes()
        for secret in (HF, PGPASS, BUILD_PASS):
            assert secret.encode() not in body, f"{secret} in {path}"
    assert HF not in run.stdout and PGPASS not in run.stdout
    assert json.loads((run.out / "job_meta.json").read_text())["build_url"] == "https://ci.example/job/9/"


def server_pid(e2e, job, role: str) -> int:
    """The pid of ``role``'s server (the process the role started, not the role itself)."""
    for pid in e2e.processes_of(job.marker, job.out):
        argv = " ".join(e2e.cmdline(pid))
        env = e2e._read(f"/proc/{pid}/environ")
        if f"DISAGG_SERVING_TYPE={role}\0".encode() in env and "dynamo." in argv and "pytest" not in argv:
            return pid
    pytest.fail(f"no server process of {role}:\n" + e2e.describe(e2e.processes_of(job.marker, job.out)))


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("role", ["DISAGG_SERVER", "GEN_0"])
def test_frozen_server_fails_its_role_within_30s(role: str, jobs, e2e) -> None:
    job = jobs.start(*LONG)
    wait_for_servers(job)
    time.sleep(3)  # the benchmark is running
    pid = server_pid(e2e, job, role)
    os.kill(pid, signal.SIGSTOP)  # alive as a process, dead as a server
    stopped = time.monotonic()
    failed = job.out / "rendezvous" / f"{role}.failed"
    while not failed.exists() and time.monotonic() - stopped < 60:
        time.sleep(0.2)
    named_after = time.monotonic() - stopped
    assert failed.exists(), f"{role}.failed not written 60 s after SIGSTOP:\n{job.output()[-3000:]}"
    assert named_after <= 30, f"{role} named only {named_after:.1f}s after SIGSTOP"
    finished = job.wait(timeout_s=120)
    assert finished.returncode != 0
    assert f"FAILED {role}: {role} server stopped answering" in finished.stdout, finished.stdout[-3000:]
    report = finished.json("report.json")
    assert report["failed_role"] == role, report["failures"]
    from junitparser import Error, Failure, JUnitXml

    cases = {c.name: [r for r in c.result if isinstance(r, (Failure, Error))]
             for s in JUnitXml.fromfile(str(finished.out / "junit.xml")) for c in s}
    assert cases.get(role), sorted(cases)
    assert "last lines" in (cases[role][0].text or "") or (cases[role][0].text or "").strip(), cases[role][0].text
