"""Slow tests of perfsanity.engines.tooling: tool venvs (install, lock, marker, timeout) and a real
disaggregated Dynamo stack (frontend + prefill mocker + decode mocker) on 127.0.0.1.

Every process is started in its own session (process group) and stopped by PID; the tests check
that no process they started survives.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from perfsanity.engines import tooling
from perfsanity.engines.model_assets import MODEL_NAME, ensure_tiny_model

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 45.0


# --- a stack of processes, each in its own process group ---------------------------------------

class Stack:
    """Starts processes in new sessions with logs under ``log_dir``; stops them by PID/PGID."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str],
              stdout_pipe: bool = False) -> subprocess.Popen[bytes]:
        """Start ``argv`` as ``name``; output to ``<log_dir>/<name>.log`` unless piped."""
        log = (self.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE if stdout_pipe else log,
                                stderr=log, start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        """Text of the process's log so far."""
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop_all(self, grace_s: float = 10.0) -> None:
        """SIGTERM each group, wait up to ``grace_s``, SIGKILL what is left, reap everything."""
        for proc in self.procs.values():
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        for proc in self.procs.values():
            if proc.stdout:
                proc.stdout.close()

    def survivors(self) -> list[int]:
        """Process groups started here that still have a live member."""
        alive = []
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, 0)
                alive.append(proc.pid)
            except ProcessLookupError:
                pass
        return alive


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A Stack that is always torn down, and must leave no survivors."""
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        s.stop_all()
        assert s.survivors() == [], "processes survived the test"


# --- HTTP helpers -------------------------------------------------------------------------------

def _http(port: int, path: str, body: dict | None = None, timeout: float = 5.0) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, repr(exc)


def _find_http_port(pid: int, deadline: float) -> int:
    """The frontend's OS-assigned HTTP port: the listening socket of ``pid`` that answers /health."""
    while time.monotonic() < deadline:
        for _host, port in tooling.listening_tcp_ports(pid):
            status, _ = _http(port, "/health", timeout=1.0)
            if status == 200:
                return port
        time.sleep(0.05)
    raise AssertionError("frontend HTTP port never answered /health")


COMPLETION = {"model": MODEL_NAME, "prompt": "hello", "max_tokens": 1,
              "nvext": {"extra_fields": ["worker_id"]}}


def _wait_first_completion(port: int, deadline: float) -> dict:
    last = (0, "")
    while time.monotonic() < deadline:
        last = _http(port, "/v1/completions", COMPLETION)
        if last[0] == 200:
            return json.loads(last[1])
        time.sleep(0.05)
    raise AssertionError(f"no 200 from /v1/completions; last: {last}")


# --- the Dynamo stack --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dynamo() -> tooling.ToolEnv:
    return tooling.ensure_tool("dynamo")


@pytest.fixture(scope="module")
def model_dir(dynamo: tooling.ToolEnv) -> Path:
    return ensure_tiny_model(tool=dynamo)


def _dynamo_env(job_dir: Path, broker_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "DYN_DISCOVERY_BACKEND": "file", "DYN_FILE_KV": str(job_dir / "kv"),
        "DYN_REQUEST_PLANE": "tcp", "DYN_EVENT_PLANE": "zmq", "DYN_ZMQ_BROKER_URL": broker_url,
        "DYN_TCP_RPC_HOST": "127.0.0.1", "DYN_TCP_RESPONSE_STREAM_HOST": "127.0.0.1",
        "DYN_EVENT_PLANE_HOST": "127.0.0.1", "DYN_SYSTEM_HOST": "127.0.0.1",
        "DYN_SDK_DISABLE_ANSI_LOGGING": "1", "DYN_LOG": "info",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    })
    return env


def _worker_env(base: dict[str, str]) -> dict[str, str]:
    return dict(base, DYN_SYSTEM_PORT="0", DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS='["generate"]')


def _read_line(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    """First stdout line of ``proc``, waiting at most ``timeout_s``."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    assert ready, f"no output from pid {proc.pid} within {timeout_s}s"
    return proc.stdout.readline().decode().strip()


def _start_stack(stack: Stack, dynamo: tooling.ToolEnv, model_dir: Path) -> int:
    """Start broker, frontend, prefill and decode mockers; return the frontend HTTP port."""
    broker = stack.start("broker", tooling.zmq_broker_argv(dynamo), dict(os.environ), stdout_pipe=True)
    broker_url = _read_line(broker, timeout_s=20)
    assert broker_url.startswith("xsub=tcp://127.0.0.1:"), broker_url
    env = _dynamo_env(stack.log_dir, broker_url)
    stack.start("frontend", dynamo.module_argv(
        "dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", "0"), env)
    mocker = ["--model-path", str(model_dir), "--model-name", MODEL_NAME, "--speedup-ratio", "1"]
    for role in ("prefill", "decode"):
        stack.start(role, dynamo.module_argv(
            "dynamo.mocker", *mocker, "--disaggregation-mode", role), _worker_env(env))
    return _find_http_port(stack.procs["frontend"].pid, time.monotonic() + READY_TIMEOUT_S)


def _selected_worker_lines(log: str, completion_id: str) -> list[str]:
    """The frontend's "Selected worker" INFO lines for one request, in order.

    The "request received request_id=<completion id without cmpl->" line also carries the HTTP
    request_id=<uuid> that the routing lines are tagged with.
    """
    received = next(line for line in log.splitlines()
                    if f"request received request_id={completion_id.removeprefix('cmpl-')}" in line)
    http_id = received.rsplit("request_id=", 1)[1].split()[0]
    return [line for line in log.splitlines()
            if "Selected worker" in line and f"request_id={http_id}" in line]


def test_disaggregated_completion_goes_through_prefill_and_decode(
        stack: Stack, dynamo: tooling.ToolEnv, model_dir: Path) -> None:
    port = _start_stack(stack, dynamo, model_dir)
    reply = _wait_first_completion(port, time.monotonic() + READY_TIMEOUT_S)

    ids = reply["nvext"]["worker_id"]
    prefill_id, decode_id = ids["prefill_worker_id"], ids["decode_worker_id"]
    assert prefill_id != decode_id
    assert reply["usage"]["completion_tokens"] == 1

    log = stack.log("frontend")
    assert "Prefill worker detected, registering and activating prefill router" in log
    selected = _selected_worker_lines(log, reply["id"])
    assert len(selected) == 2, selected
    assert f"worker_id={prefill_id}" in selected[0], selected
    assert f"worker_id={decode_id}" in selected[1], selected
    chat = {"model": MODEL_NAME, "max_tokens": 2, "messages": [{"role": "user", "content": "hello"}]}
    status, body = _http(port, "/v1/chat/completions", chat)
    assert status == 200, body
    assert json.loads(body)["usage"]["prompt_tokens"] > 5  # the chat template was applied

    assert f"FPM direct publisher started worker_id={prefill_id}" in stack.log("prefill")
    assert f"FPM direct publisher started worker_id={decode_id}" in stack.log("decode")


def test_all_listeners_are_loopback_and_workers_report_health(
        stack: Stack, dynamo: tooling.ToolEnv, model_dir: Path) -> None:
    port = _start_stack(stack, dynamo, model_dir)
    _wait_first_completion(port, time.monotonic() + READY_TIMEOUT_S)
    for name, proc in stack.procs.items():
        listeners = tooling.listening_tcp_ports(proc.pid)
        assert listeners, name
        assert {host for host, _ in listeners} == {"127.0.0.1"}, (name, listeners)
    for role in ("prefill", "decode"):
        line = next(x for x in stack.log(role).splitlines() if "system status server bound to:" in x)
        system_port = int(line.rsplit(":", 1)[1])
        status, body = _http(system_port, "/health")
        assert status == 200 and json.loads(body)["status"] == "ready", (role, status, body)


# --- venv installation mechanics, with a fake tool so that no real install is needed ------------

FAKE_SPEC = """
import sys
from perfsanity.engines import tooling
tooling.TOOLS["fake"] = tooling.ToolSpec(
    name="fake", version="1", dist="pip", pip_steps=(("--no-index", "pip"),),
    smoke_code=sys.argv[1], expected_minutes="seconds")
env = tooling.ensure_tool("fake")
print(env.python)
"""


def _run_fake(home: Path, smoke: str = "import sys", timeout_s: str = "120",
              wait: bool = True) -> subprocess.Popen[str] | subprocess.CompletedProcess[str]:
    env = dict(os.environ, PERFSANITY_HOME=str(home), PERFSANITY_INSTALL_TIMEOUT=timeout_s,
               PYTHONPATH=str(REPO))
    argv = [sys.executable, "-c", FAKE_SPEC, smoke]
    if wait:
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_concurrent_callers_install_once(tmp_path: Path) -> None:
    procs = [_run_fake(tmp_path, wait=False) for _ in range(3)]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], results
    stderr = "".join(err for _, err in results)
    assert stderr.count("[perfsanity] installing fake 1 into") == 1, stderr
    assert stderr.count("waiting for install of fake 1") >= 1, stderr
    venv = tmp_path / "venvs" / "fake-1"
    assert {out.strip() for out, _ in results} == {str(venv / "bin" / "python")}
    assert (venv / tooling.MARKER_NAME).is_file()
    assert "pip" in (venv / tooling.LOG_NAME).read_text()
    again = _run_fake(tmp_path)  # complete marker: no second install
    assert again.returncode == 0 and "installing" not in again.stderr


def test_failed_smoke_import_is_not_trusted_and_is_redone(tmp_path: Path) -> None:
    bad = _run_fake(tmp_path, smoke="import no_such_module_xyz")
    assert bad.returncode != 0
    assert "ToolInstallError" in bad.stderr and "no_such_module_xyz" in bad.stderr
    venv = tmp_path / "venvs" / "fake-1"
    assert not (venv / tooling.MARKER_NAME).exists()
    good = _run_fake(tmp_path)
    assert good.returncode == 0, good.stderr
    assert "removing incomplete install" in good.stderr
    assert (venv / tooling.MARKER_NAME).is_file()


def test_install_time_bound(tmp_path: Path) -> None:
    slow = _run_fake(tmp_path, smoke="import time; time.sleep(60)", timeout_s="8")
    assert slow.returncode != 0
    assert "timed out" in slow.stderr


def test_lock_wait_is_bounded_and_names_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "venvs" / "fake-1.lock"
    with tooling.file_lock(lock, "test holding the lock", timeout_s=1):
        blocked = _run_fake(tmp_path, timeout_s="1")
    assert blocked.returncode != 0
    assert str(lock) in blocked.stderr and "waiting for lock" in blocked.stderr


def test_python_override_skips_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERFSANITY_HOME", str(tmp_path))
    monkeypatch.setenv("PERFSANITY_AIPERF_PYTHON", sys.executable)
    if subprocess.run([sys.executable, "-c", "import importlib.metadata as m; m.version('aiperf')"],
                      capture_output=True).returncode == 0:
        env = tooling.ensure_tool("aiperf")
        assert env.python == Path(sys.executable)
    else:
        with pytest.raises(tooling.ToolInstallError, match="PERFSANITY_AIPERF_PYTHON"):
            tooling.ensure_tool("aiperf")
    assert not (tmp_path / "venvs").exists()
