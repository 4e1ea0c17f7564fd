"""The torch-profiler window hooks (perfsanity.run.profiler_hooks) against real HTTP servers on
127.0.0.1: start goes to every published worker before the block, stop after it (also when the block
fails), only for the listed windows; answered, refused and unreachable calls are all recorded."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from perfsanity.engines.base import Address
from perfsanity.run import profiler_hooks
from perfsanity.run.job import Job
from perfsanity.run.rendezvous import Rendezvous
from perfsanity.spec.config import load_config
from perfsanity.spec.topology import build_topology

PROFILING = Path(__file__).resolve().parents[2] / "test_configs/disagg/perf/mocker-ctx1-gen1-profiling.yaml"


def _sglang_like(seen: list[tuple[float, str, dict]]) -> ThreadingHTTPServer:
    """Answers SGLang's profiler paths as its http_server does (200 + a line of text)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            seen.append((time.time(), self.path, body))
            text = {"/start_profile": b"Start profiling.\n", "/stop_profile": b"Stop profiling.\n"}.get(self.path)
            self.send_response(200 if text else 404)
            self.send_header("Content-Length", str(len(text or b"")))
            self.end_headers()
            self.wfile.write(text or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def job(tmp_path):
    config = load_config(PROFILING)
    return Job(config, build_topology(config), tmp_path / "job", "BENCHMARK", {}, None)


def test_window_brackets_the_block_on_every_worker(job):
    seen: list[tuple[float, str, dict]] = []
    server = _sglang_like(seen)
    try:
        rdv = Rendezvous(job.job_dir / "rendezvous")
        rdv.publish(Address("GEN_0", "127.0.0.1", server.server_address[1]))
        closed = _free_port()  # CTX_0 published a port nothing listens on any more
        rdv.publish(Address("CTX_0", "127.0.0.1", closed))
        calls: list = []
        with profiler_hooks.window(job, 1, calls):  # c1 is not a window: nothing is sent
            pass
        assert calls == [] and seen == []
        with profiler_hooks.window(job, 2, calls):
            inside = time.time()
            time.sleep(0.05)
        after = time.time()
    finally:
        server.shutdown()
    by = {(c.role, c.action): c for c in calls}
    assert sorted(by) == [("CTX_0", "start"), ("CTX_0", "stop"), ("GEN_0", "start"), ("GEN_0", "stop")]
    gen_start, gen_stop = by[("GEN_0", "start")], by[("GEN_0", "stop")]
    assert (gen_start.status, gen_start.answer, gen_stop.status) == (200, "Start profiling.", 200)
    assert gen_start.answered_at <= inside <= gen_stop.sent_at <= after
    assert [p for _, p, _ in seen] == ["/start_profile", "/stop_profile"]
    assert seen[0][2] == {"output_dir": str(job.job_dir / "profiles" / "GEN_0")}
    ctx = by[("CTX_0", "start")]
    assert ctx.status is None and "no answer" in ctx.answer and ctx.url.endswith(f":{closed}/start_profile")


def test_stop_is_sent_when_the_point_fails(job):
    seen: list[tuple[float, str, dict]] = []
    server = _sglang_like(seen)
    try:
        Rendezvous(job.job_dir / "rendezvous").publish(Address("GEN_0", "127.0.0.1", server.server_address[1]))
        calls: list = []
        with pytest.raises(RuntimeError), profiler_hooks.window(job, 2, calls):
            raise RuntimeError("client failed")
    finally:
        server.shutdown()
    assert [(c.role, c.action) for c in calls] == [("GEN_0", "start"), ("GEN_0", "stop")]  # CTX_0 never published
    assert [p for _, p, _ in seen] == ["/start_profile", "/stop_profile"]
