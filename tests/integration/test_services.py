"""Slow tests of perfsanity.run.services with the real etcd, nats-server and nginx (Debian packages):

* etcd and NATS start on ports of their own, answer their health checks, and publish the addresses
  Dynamo processes get as ETCD_ENDPOINTS / NATS_SERVER; two jobs at once never share a port;
* etcd whose port was taken between choosing and binding starts again on new ports;
* a service that dies is what the role's watch finds, by name, with its log;
* nginx on the socket the harness bound balances over two real HTTP servers, with its files in the
  job dir; every process is stopped by PID afterwards.

Missing binaries skip the tests (fail under CI=true, where .ci/run installs them).
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import threading
import urllib.request
from pathlib import Path

import pytest

from perfsanity.common.processes import ProcessSet
from perfsanity.engines.base import Address
from perfsanity.run import services
from perfsanity.run.job import Job
from perfsanity.spec.config import load_config
from perfsanity.spec.topology import build_topology

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "test_configs/disagg/perf/mocker-ctx2-gen2-etcd-nats.yaml"


@pytest.fixture(autouse=True)
def binaries():
    missing = [b for b in ("etcd", "nats-server", "nginx") if shutil.which(b, path=os.environ["PATH"] + ":/usr/sbin")
               is None]
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {', '.join(missing)} not installed (see .ci/run)", pytrace=False)
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install etcd-server nats-server nginx)")


def make_job(job_dir: Path) -> Job:
    config = load_config(CONFIG)
    environ = {"PATH": os.environ["PATH"] + ":/usr/sbin", "HOME": os.environ.get("HOME", "/root")}
    return Job(config, build_topology(config), job_dir, "DISAGG_SERVER", environ, None)


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - our own service
        return resp.status, resp.read().decode()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_etcd_and_nats_start_on_ports_of_their_own(tmp_path):
    jobs = [make_job(tmp_path / f"job{i}") for i in range(2)]
    sets = [ProcessSet() for _ in jobs]
    try:
        values = [services.start_infra(job, procs) for job, procs in zip(jobs, sets, strict=True)]
        for job, value in zip(jobs, values, strict=True):
            assert set(value) == {"etcd", "nats"}
            assert job.rendezvous.value("etcd") == value["etcd"] and job.rendezvous.value("nats") == value["nats"]
            assert services.infra_env(job) == {"ETCD_ENDPOINTS": value["etcd"], "NATS_SERVER": value["nats"]}
            assert _get(value["etcd"] + "/health")[1].find('"true"') >= 0
            # etcd's KV API works (what Dynamo's discovery uses), through its JSON gateway
            req = urllib.request.Request(value["etcd"] + "/v3/kv/put", data=json.dumps(
                {"key": "aw==", "value": "dg=="}).encode(), headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
                assert resp.status == 200
            with socket.create_connection(("127.0.0.1", _port(value["nats"])), timeout=5) as sock:
                assert sock.recv(4096).startswith(b"INFO ")  # a NATS server greets every client
            assert (job.job_dir / "logs" / "DISAGG_SERVER.etcd.log").stat().st_size > 0
            assert (job.job_dir / "logs" / "DISAGG_SERVER.nats.log").stat().st_size > 0
        mine = [{_port(v) for v in value.values()} for value in values]
        assert not mine[0] & mine[1]
    finally:
        for procs in sets:
            procs.stop_all(5)
    for procs in sets:
        assert all(p.poll() is not None for p in procs.procs)


def test_etcd_starts_again_when_its_port_was_taken(tmp_path, monkeypatch):
    job = make_job(tmp_path / "job")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    real = services.free_port_block
    handed = iter([taken.getsockname()[1]])
    monkeypatch.setattr(services, "free_port_block", lambda host: next(handed, None) or real(host))
    procs = ProcessSet()
    try:
        url = services.start_etcd(job, procs)
        assert _port(url) != taken.getsockname()[1]
        assert "address already in use" in (job.job_dir / "logs" / "DISAGG_SERVER.etcd.log").read_text()
        assert [p.name for p in procs.procs] == ["DISAGG_SERVER etcd"]  # the failed attempt is not watched
        assert _get(url + "/health")[0] == 200
    finally:
        procs.stop_all(5)
        taken.close()


def test_a_dead_service_is_found_by_name(tmp_path):
    job = make_job(tmp_path / "job")
    procs = ProcessSet()
    try:
        services.start_infra(job, procs)
        assert procs.first_dead() is None
        nats = next(p for p in procs.procs if p.name == "DISAGG_SERVER nats")
        os.kill(nats.pid, signal.SIGKILL)
        nats.popen.wait(timeout=10)
        dead = procs.first_dead()
        assert dead is nats and dead.poll() == -signal.SIGKILL
        assert "Server is ready" in dead.tail()  # its own log, not just our start line
    finally:
        procs.stop_all(5)


class _Named(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server API
        body = self.server.name.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_nginx_balances_over_two_servers_on_its_adopted_socket(tmp_path):
    servers = []
    for name in ("fe0", "fe1"):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Named)
        srv.name = name  # type: ignore[attr-defined]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    job = make_job(tmp_path / "job")
    procs = ProcessSet()
    try:
        upstreams = [Address("DISAGG_SERVER", "127.0.0.1", srv.server_address[1]) for srv in servers]
        door = services.start_nginx(job, procs, upstreams, "/health")
        answers = [_get(f"{door.url}/health")[1] for _ in range(6)]
        assert sorted(set(answers)) == ["fe0", "fe1"], answers
        root = job.job_dir / "nginx"
        access = (root / "access.log").read_text().splitlines()
        assert len(access) >= 6 and {ln.rsplit("upstream=", 1)[1] for ln in access} == {str(a) for a in upstreams}
        assert "using inherited sockets" in (root / "error.log").read_text()
        assert (root / "nginx.pid").is_file()
    finally:
        procs.stop_all(5)
        for srv in servers:
            srv.shutdown()
    assert all(p.poll() is not None for p in procs.procs)
