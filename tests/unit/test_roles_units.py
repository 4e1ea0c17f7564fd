"""The role machinery on its own, fast and real: listening ports read from /proc of a real server,
the rendezvous dir with real files written by another process, process-group shutdown, bounded waits,
triage redaction and server discovery against a real HTTP server — all on 127.0.0.1, no Dynamo.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from perfsanity.common.errors import RoleFailed, WaitTimeout
from perfsanity.common.ports import listening_ports, listening_sockets
from perfsanity.common.processes import ManagedProcess, ProcessSet
from perfsanity.common.waits import wait_until
from perfsanity.engines.base import Address, ServerSpec
from perfsanity.run.job import Job
from perfsanity.run.rendezvous import Rendezvous
from perfsanity.run.roles import discover_address, serve
from perfsanity.run.triage import triage
from perfsanity.spec.config import load_config
from perfsanity.spec.topology import build_topology

REPO = Path(__file__).resolve().parents[2]
MOCKER = REPO / "test_configs/disagg/perf/mocker-ctx1-gen1.yaml"
SECRET = "hf_" + "A1b2C3d4E5f6G7h8I9j0K1l2"
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def _alive(pid: int) -> bool:
    """Exists and is not a zombie (an orphan's zombie waits for a reaping PID 1)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


@pytest.fixture
def procs():
    """Processes a test starts; all stopped (process group, TERM then KILL) at teardown."""
    ps = ProcessSet()
    yield ps
    ps.stop_all(2)


def http_server(procs: ProcessSet, tmp_path: Path, *, name: str = "srv", directory: Path | None = None,
                wrap: bool = False) -> ManagedProcess:
    """``python -m http.server 0 --bind 127.0.0.1`` (inside a bash that does not exec it when ``wrap``)."""
    argv = [sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1"]
    if directory is not None:
        argv += ["--directory", str(directory)]
    if wrap:
        argv = ["bash", "-c", " ".join(argv) + "; exit $?"]
    return procs.start(name, argv, env=ENV, log_path=tmp_path / f"{name}.log")


def printed_port(proc: ManagedProcess) -> int:
    """The port http.server says it serves on (its own view, to compare with /proc's)."""
    m = wait_until(lambda: re.search(r"Serving HTTP on \S+ port (\d+)", proc.log_path.read_text()), timeout_s=10,
                   what=f"{proc.name} to print its port")
    return int(m.group(1))


# ------------------------------------------------------------------------------------------ ports


def test_listening_ports_of_a_real_server_started_with_port_0(procs, tmp_path):
    proc = http_server(procs, tmp_path)
    port = printed_port(proc)
    assert wait_until(lambda: listening_ports(proc.pid), timeout_s=10, what="a listening port") == [port]
    assert listening_sockets(proc.pid) == [("127.0.0.1", port)]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:  # noqa: S310 - local server
        assert resp.status == 200


def test_listening_ports_include_descendants_but_not_other_processes(procs, tmp_path):
    wrapper = http_server(procs, tmp_path, name="wrapped", wrap=True)
    other = http_server(procs, tmp_path, name="other")
    port, other_port = printed_port(wrapper), printed_port(other)
    assert port != other_port
    assert wait_until(lambda: listening_ports(wrapper.pid), timeout_s=10, what="the child's port") == [port]
    assert listening_sockets(wrapper.pid, tree=False) == []  # bash itself holds no socket
    assert listening_ports(other.pid) == [other_port]
    assert listening_ports(2**22 + 12345) == []  # no such process: nothing, no error


# ------------------------------------------------------------------------------------------ rendezvous


def _in_other_process(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], env=ENV)  # noqa: S603


def test_rendezvous_publish_and_wait_for_addresses_published_by_another_process(tmp_path):
    rdv = Rendezvous(tmp_path / "rdv")
    assert rdv.address("GEN_0") is None and rdv.status() is None
    rdv.publish(Address("CTX_0", "127.0.0.1", 4001), ready_s=1.5)
    writer = _in_other_process(
        "import time; from pathlib import Path; from perfsanity.run.rendezvous import Rendezvous;"
        "from perfsanity.engines.base import Address; time.sleep(0.3);"
        f"Rendezvous(Path({str(tmp_path / 'rdv')!r})).publish(Address('GEN_0', '127.0.0.1', 4002))")
    try:
        addrs = rdv.wait_for(["GEN_0", "CTX_0"], timeout_s=20, waiter="DISAGG_SERVER")
    finally:
        writer.wait(10)
    assert addrs == {"GEN_0": Address("GEN_0", "127.0.0.1", 4002), "CTX_0": Address("CTX_0", "127.0.0.1", 4001)}
    assert addrs["GEN_0"].url == "http://127.0.0.1:4002"
    data = json.loads((tmp_path / "rdv" / "CTX_0.addr").read_text())
    assert (data["host"], data["port"], data["pid"], data["ready_s"]) == ("127.0.0.1", 4001, os.getpid(), 1.5)
    assert sorted(p.name for p in (tmp_path / "rdv").iterdir()) == ["CTX_0.addr", "GEN_0.addr"]  # no temp files


def test_rendezvous_waiter_aborts_at_once_when_another_role_fails(tmp_path):
    rdv = Rendezvous(tmp_path / "rdv")
    writer = _in_other_process(
        "import time; from pathlib import Path; from perfsanity.run.rendezvous import Rendezvous; time.sleep(0.3);"
        f"Rendezvous(Path({str(tmp_path / 'rdv')!r})).report_failure('GEN_0', 'GEN_0 server exited with code 2',"
        f" 'usage: mocker\\nHF_TOKEN={SECRET}\\nerror: bad flag')")
    t0 = time.monotonic()
    try:
        with pytest.raises(RoleFailed) as info:
            rdv.wait_for(["GEN_0", "CTX_0"], timeout_s=60, waiter="DISAGG_SERVER")
    finally:
        writer.wait(10)
    assert time.monotonic() - t0 < 5  # not the 60 s timeout
    exc = info.value
    assert exc.role == "GEN_0" and str(exc).startswith("GEN_0: GEN_0 server exited with code 2")
    assert "error: bad flag" in exc.log_tail and SECRET not in exc.log_tail and "HF_TOKEN=***" in exc.log_tail
    assert SECRET not in (tmp_path / "rdv" / "GEN_0.failed").read_text()  # redacted on disk too
    with pytest.raises(RoleFailed, match=r"^GEN_0: "):
        rdv.raise_if_failed()
    assert [f["role"] for f in rdv.failures()] == ["GEN_0"]


def test_rendezvous_timeout_names_the_roles_still_missing(tmp_path):
    rdv = Rendezvous(tmp_path / "rdv")
    rdv.publish(Address("CTX_0", "127.0.0.1", 4001))
    rdv.raise_if_failed()  # nothing failed: no error
    t0 = time.monotonic()
    with pytest.raises(WaitTimeout) as info:
        rdv.wait_for(["GEN_0", "CTX_0", "GEN_1"], timeout_s=0.5, waiter="DISAGG_SERVER")
    assert 0.5 <= time.monotonic() - t0 < 3
    assert str(info.value) == ("waited 0.5s for DISAGG_SERVER: addresses of GEN_0, CTX_0, GEN_1; "
                               "gave up: still missing: GEN_0, GEN_1")


def test_rendezvous_status_file(tmp_path):
    rdv = Rendezvous(tmp_path / "rdv")
    assert rdv.status() is None
    (tmp_path / "rdv" / "benchmark.status").write_text("{half")  # unreadable: treated as absent
    assert rdv.status() is None
    rdv.write_status("failed", failures=["BENCHMARK: boom"], elapsed_s=1.25)
    assert rdv.status() == {"status": "failed", "failures": ["BENCHMARK: boom"], "elapsed_s": 1.25}


# ------------------------------------------------------------------------------------------ procs


def test_stop_kills_the_whole_process_group_including_a_grandchild_that_ignores_term(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    grandchild = (f"import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                  f"open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(300)")
    script = f"{sys.executable} -c \"{grandchild}\" & wait"
    proc = ManagedProcess("parent", ["bash", "-c", script], env=ENV, log_path=tmp_path / "p.log")
    gpid = int(wait_until(lambda: pidfile.exists() and pidfile.read_text(), timeout_s=10, what="grandchild pid"))
    assert _alive(gpid) and os.getpgid(gpid) == proc.pid  # same group as the session leader
    t0 = time.monotonic()
    proc.stop(timeout_s=5)
    assert time.monotonic() - t0 < 8
    wait_until(lambda: not _alive(gpid), timeout_s=5, what=f"grandchild {gpid} to die")
    assert not proc.running
    assert "[perfsanity] start parent: bash -c" in proc.tail()


def test_stop_kills_a_leader_that_ignores_term_after_the_bound(tmp_path):
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(300)"
    proc = ManagedProcess("stubborn", [sys.executable, "-c", code], env=ENV, log_path=tmp_path / "s.log")
    wait_until(lambda: proc.log_path.read_text().splitlines()[-1] == "up", timeout_s=10, what="stubborn to start")
    t0 = time.monotonic()
    assert proc.stop(timeout_s=0.5) == -9
    assert 0.5 <= time.monotonic() - t0 < 5


def test_process_tail_is_redacted(tmp_path):
    proc = ManagedProcess("talker", ["bash", "-c", f"echo start; echo HF_TOKEN={SECRET}; echo done"], env=ENV,
                          log_path=tmp_path / "t.log")
    proc.popen.wait(10)
    text = proc.tail()
    assert "HF_TOKEN=***" in text and SECRET not in text and text.splitlines()[-1] == "done"
    proc.stop()


# ------------------------------------------------------------------------------------------ waits


def test_wait_until_returns_the_value_and_times_out_saying_what_it_waited_for():
    calls = []
    assert wait_until(lambda: calls.append(1) or (len(calls) >= 3 and "ready"), timeout_s=5, what="x") == "ready"
    t0 = time.monotonic()
    with pytest.raises(WaitTimeout) as info:
        wait_until(lambda: None, timeout_s=0.3, what="the frontend on :8000", on_timeout=lambda: "last answer: HTTP 404")
    assert 0.3 <= time.monotonic() - t0 < 1.5
    assert str(info.value) == "waited 0.3s for the frontend on :8000; gave up: last answer: HTTP 404"
    with pytest.raises(WaitTimeout, match=r"^waited 0.1s for nothing; gave up$"):
        wait_until(lambda: False, timeout_s=0.1, what="nothing")


def test_wait_until_stops_at_once_when_the_check_raises():
    def check():
        raise RoleFailed("CTX_0", "died")

    t0 = time.monotonic()
    with pytest.raises(RoleFailed):
        wait_until(check, timeout_s=30, what="never")
    assert time.monotonic() - t0 < 1


# ------------------------------------------------------------------------------------------ triage


def test_triage_report_json_is_redacted_and_names_the_failed_role(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "GEN_0.server.log").write_text(f"loading\nHF_TOKEN={SECRET}\nTraceback (most recent call last):\nboom\n")
    (logs / "BENCHMARK.log").write_text(f"export HF_TOKEN={SECRET}\nwaiting\n")
    rdv = Rendezvous(tmp_path / "rendezvous")
    # failure and status files are plain JSON any role (or a draft script) may write: triage redacts
    # everything it copies, not only the log tails
    (tmp_path / "rendezvous" / "GEN_0.failed").write_text(json.dumps(
        {"role": "GEN_0", "message": f"GEN_0 server exited with code 1; HF_TOKEN={SECRET} was set",
         "log_tail": f"HF_TOKEN={SECRET}\nTraceback (most recent call last):\nboom"}))
    rdv.write_status("failed", failures=[f"GEN_0: token {SECRET} rejected"])
    report = triage(tmp_path, reason=f"job failed; HF_TOKEN={SECRET}")
    text = (tmp_path / "report.json").read_text()
    assert SECRET not in text and SECRET not in json.dumps(report)
    assert json.loads(text) == report
    assert "HF_TOKEN=***" in report["log_tails"]["GEN_0.server"] and report["reason"] == "job failed; HF_TOKEN=***"
    assert report["failures"][0]["message"] == "GEN_0 server exited with code 1; HF_TOKEN=*** was set"
    assert (report["failed_role"], report["error_signature"]) == ("GEN_0", "python-exception")
    assert sorted(report["log_tails"]) == ["BENCHMARK", "GEN_0.server"]


def test_triage_names_the_benchmark_when_only_its_status_records_the_failure(tmp_path):
    (tmp_path / "logs").mkdir()
    Rendezvous(tmp_path / "rendezvous").write_status(
        "failed", failures=["waited 10s for a 1-token completion from http://127.0.0.1:1 to return 200"])
    report = triage(tmp_path, reason="job failed (exit code 1)")
    assert (report["failed_role"], report["failures"], report["error_signature"]) == ("BENCHMARK", [], "timeout")
    assert triage(tmp_path / "nothing")["failed_role"] is None  # an empty job dir: nothing to blame


# ------------------------------------------------------------------------------------------ discovery


@pytest.fixture
def job(tmp_path):
    """GEN_0 of the mocker job, outside SLURM (binds and advertises 127.0.0.1)."""
    config = load_config(MOCKER)
    j = Job(config, build_topology(config), tmp_path / "job", "GEN_0", {}, None)
    assert j.host == "127.0.0.1" and j.rank == 0
    return j


def test_discover_address_finds_the_port_of_a_server_started_with_port_0(job, procs, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "health").write_text("ok\n")  # GET /health -> 200
    argv = (sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(site))
    proc = procs.start("GEN_0 server", argv, env=ENV, log_path=tmp_path / "gen.log")
    spec = ServerSpec(argv=argv, port=0, health_path="/health")
    addr = discover_address(job, proc, spec, timeout_s=15, what="GEN_0 server to answer /health")
    assert addr == Address("GEN_0", "127.0.0.1", printed_port(proc))
    job.rendezvous.publish(addr)
    assert job.rendezvous.address("GEN_0") == addr


def test_discover_address_fails_naming_the_role_when_the_server_exits(job, procs, tmp_path):
    argv = (sys.executable, "-c", "import sys; print('error: unrecognized arguments: --bogus'); sys.exit(2)")
    proc = procs.start("GEN_0 server", argv, env=ENV, log_path=tmp_path / "gen.log")
    with pytest.raises(RoleFailed) as info:
        discover_address(job, proc, ServerSpec(argv=argv), timeout_s=15, what="GEN_0 server")
    assert info.value.role == "GEN_0"
    assert str(info.value).startswith("GEN_0: GEN_0 server exited with code 2 while starting")
    assert "unrecognized arguments: --bogus" in info.value.log_tail


def test_discover_address_aborts_when_another_role_failed_and_times_out_saying_what(job, procs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()  # GET /health -> 404: the server listens but never becomes healthy
    argv = (sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(empty))
    proc = procs.start("GEN_0 server", argv, env=ENV, log_path=tmp_path / "gen.log")
    port = printed_port(proc)
    with pytest.raises(WaitTimeout) as info:
        discover_address(job, proc, ServerSpec(argv=argv), timeout_s=1, what="GEN_0 server to answer /health")
    msg = str(info.value)
    assert msg.startswith(f"waited 1s for GEN_0 server to answer /health; gave up: listening ports [{port}]; log tail:")
    assert '"GET /health HTTP/1.1" 404' in msg

    job.rendezvous.report_failure("CTX_0", "CTX_0 server died with exit code 1")
    t0 = time.monotonic()
    with pytest.raises(RoleFailed) as info:
        discover_address(job, proc, ServerSpec(argv=argv), timeout_s=30, what="GEN_0 server")
    assert info.value.role == "CTX_0" and time.monotonic() - t0 < 2


def _serve(job: Job, argv: tuple[str, ...]) -> None:
    job.rendezvous.publish_value("zmq_broker", "tcp://127.0.0.1:1")  # the job service serve() waits for
    serve(job, ServerSpec(argv=argv), "gen", None, ready_timeout_s=30)


def test_serve_reports_its_own_failure_once_without_the_role_prefix_doubled(job):
    with pytest.raises(RoleFailed) as info:
        _serve(job, (sys.executable, "-c", "import sys; print('error: unrecognized arguments: --bogus'); sys.exit(2)"))
    assert info.value.role == "GEN_0"
    [failure] = job.rendezvous.failures()
    assert (failure["role"], failure["message"]) == ("GEN_0", "GEN_0 server exited with code 2 while starting")
    assert "unrecognized arguments: --bogus" in failure["log_tail"]


def test_serve_does_not_report_another_roles_failure_as_its_own(job, tmp_path):
    job.rendezvous.report_failure("CTX_0", "CTX_0 server exited with code 1", "ctx tail")
    t0 = time.monotonic()
    with pytest.raises(RoleFailed) as info:
        _serve(job, (sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(tmp_path)))
    assert info.value.role == "CTX_0" and time.monotonic() - t0 < 10
    assert [f["role"] for f in job.rendezvous.failures()] == ["CTX_0"]  # no GEN_0.failed for the cascade
