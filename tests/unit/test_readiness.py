"""The benchmark starts only on the whole path: a worker that publishes late, or that the frontend has
not discovered yet, holds back the readiness probe and every benchmark request (real rendezvous files,
a real HTTP front door on 127.0.0.1:0 answering ``/health`` as dynamo.frontend 1.6.1 does)."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from perfsanity.common.errors import WaitTimeout
from perfsanity.engines.base import Address
from perfsanity.engines.dynamo_runtime import discovered_workers
from perfsanity.run.benchmark import wait_whole_path
from perfsanity.run.job import Job
from perfsanity.run.rendezvous import Rendezvous
from perfsanity.spec.config import load_config
from perfsanity.spec.topology import build_topology

ROOT = Path(__file__).resolve().parents[2]
MOCKER = ROOT / "test_configs/disagg/perf/mocker-ctx1-gen1.yaml"
HEALTH = ROOT / "tests/fixtures/dynamo/frontend-health-1p1d.json"


def _health(components: list[str]) -> bytes:
    """The recorded frontend /health answer, keeping only the workers whose component is listed."""
    data = json.loads(HEALTH.read_text())
    data["instances"] = [i for i in data["instances"] if i["component"] in components]
    return json.dumps(data).encode()


def _front_door(seen: list[float], listed: list[str] | None = None) -> ThreadingHTTPServer:
    """POST = a completion (its arrival time recorded); GET /health lists the components in ``listed``."""
    listed = ["prefill", "backend"] if listed is None else listed

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            body = _health(listed) if self.path == "/health" else b"{}"
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 - http.server API
            seen.append(time.time())
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.dumps({"choices": [{"text": "x"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_late_worker_holds_back_the_first_request(tmp_path):
    config = load_config(MOCKER)
    job = Job(config, build_topology(config), tmp_path / "job", "BENCHMARK", {}, None)
    workers = [p.role for p in job.topology.workers]
    assert sorted(workers) == ["CTX_0", "GEN_0"]
    seen: list[float] = []
    door = _front_door(seen)
    try:
        rdv = Rendezvous(job.rendezvous.path)
        rdv.publish(Address("DISAGG_SERVER", "127.0.0.1", door.server_address[1]))  # the router is up first
        rdv.publish(Address("CTX_0", "127.0.0.1", 1))
        late = tmp_path / "job" / "rendezvous" / "GEN_0.addr"

        def publish_late() -> None:
            time.sleep(1.0)
            rdv.publish(Address("GEN_0", "127.0.0.1", 2))

        t = threading.Thread(target=publish_late)
        t.start()
        url = wait_whole_path(job)
        t.join()
    finally:
        door.shutdown()
    assert url == f"http://127.0.0.1:{door.server_address[1]}"
    assert seen, "the readiness completion reached the front door"
    assert late.exists() and min(seen) >= late.stat().st_mtime, "a request preceded the last worker's publish"


def _job(tmp_path: Path, **timeouts: int) -> Job:
    config = load_config(MOCKER)
    if timeouts:
        config = config.model_copy(update={"timeouts": config.timeouts.model_copy(update=timeouts)})
    return Job(config, build_topology(config), tmp_path / "job", "BENCHMARK", {}, None)


def _publish_all(job: Job, door: ThreadingHTTPServer) -> None:
    rdv = Rendezvous(job.rendezvous.path)
    rdv.publish(Address("DISAGG_SERVER", "127.0.0.1", door.server_address[1]))
    rdv.publish(Address("CTX_0", "127.0.0.1", 1))
    rdv.publish(Address("GEN_0", "127.0.0.1", 2))


def test_the_recorded_frontend_health_counts_one_prefill_and_one_decode_worker():
    assert discovered_workers(HEALTH.read_bytes()) == {"ctx": 1, "gen": 1, "server": 1}
    assert discovered_workers(_health(["prefill"])) == {"ctx": 1}
    with pytest.raises(ValueError, match="instances"):
        discovered_workers(b'{"status": "healthy"}')


def test_a_worker_the_frontend_has_not_discovered_holds_back_the_first_request(tmp_path):
    job = _job(tmp_path)
    seen: list[float] = []
    listed = ["prefill"]  # every worker published, but the frontend sees only the prefill one
    door = _front_door(seen, listed)
    try:
        _publish_all(job, door)
        discovered: list[float] = []

        def discover_late() -> None:
            time.sleep(1.0)
            discovered.append(time.time())
            listed.append("backend")

        t = threading.Thread(target=discover_late)
        t.start()
        wait_whole_path(job)
        t.join()
    finally:
        door.shutdown()
    assert seen and discovered, "the readiness completion reached the front door after the discovery"
    assert min(seen) >= discovered[0], "a request preceded the frontend's discovery of the decode worker"


def test_a_worker_never_discovered_ends_the_wait_naming_what_is_missing(tmp_path):
    job = _job(tmp_path, router_ready=1)
    seen: list[float] = []
    door = _front_door(seen, ["prefill"])
    try:
        _publish_all(job, door)
        started = time.monotonic()
        with pytest.raises(WaitTimeout) as info:
            wait_whole_path(job)
        took = time.monotonic() - started
    finally:
        door.shutdown()
    port = door.server_address[1]
    assert re.search(rf"http://127\.0\.0\.1:{port}/health lists 0 of 1 decode \(GEN\) workers", str(info.value))
    assert "DISAGG_SERVER to discover every worker" in str(info.value)
    assert took < 5, f"the wait is bounded by timeouts.router_ready=1 s (took {took:.1f}s)"
    assert not seen, "no completion was sent while a worker was undiscovered"
