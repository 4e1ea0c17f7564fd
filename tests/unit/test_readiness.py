"""The benchmark starts only on the whole path: a worker that publishes late holds back the readiness
probe and every benchmark request (real rendezvous files, a real HTTP front door on 127.0.0.1:0)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from perfsanity.engines.base import Address
from perfsanity.run.benchmark import wait_whole_path
from perfsanity.run.job import Job
from perfsanity.run.rendezvous import Rendezvous
from perfsanity.spec.config import load_config
from perfsanity.spec.topology import build_topology

MOCKER = Path(__file__).resolve().parents[2] / "test_configs/disagg/perf/mocker-ctx1-gen1.yaml"


def _front_door(seen: list[float]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
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
