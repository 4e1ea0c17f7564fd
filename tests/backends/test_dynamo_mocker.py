"""The dynamo-mocker backend: exact command lines and env, and the argv parsed by Dynamo's own
parsers (dynamo.mocker, dynamo.frontend) in the project's Dynamo venv when it is installed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from backendtest_support import REPO, router_context, worker_context

from perfsanity.engines import get_backend
from perfsanity.engines.tooling import perfsanity_home
from perfsanity.spec.config import load_config
from perfsanity.spec.topology import build_topology

MOCKER_CONFIGS = sorted((REPO / "test_configs/disagg/perf").glob("mocker-*.yaml"))
CHECK_SCRIPT = Path(__file__).resolve().parent / "engine_parser_check.py"
BACKEND = get_backend("dynamo-mocker")


def _dynamo_python() -> Path | None:
    found = sorted(perfsanity_home().glob("venvs/dynamo-*/bin/python"))
    return found[-1] if found else None


def test_worker_command_and_env():
    config = load_config(REPO / "test_configs/disagg/perf/mocker-ctx1-gen1.yaml")
    gen = build_topology(config).role("GEN_0")
    spec = BACKEND.worker(worker_context(config, gen))
    assert spec.argv == (
        "python3", "-m", "dynamo.mocker", "--model-path", "/models/tiny-mocker", "--model-name", "tiny-mocker",
        "--disaggregation-mode", "decode", "--speedup-ratio", "1.0", "--block-size", "64",
    )
    assert spec.tool == "dynamo" and spec.port == 0 and spec.health_path == "/health"
    env = spec.env
    assert env["DYN_DISCOVERY_BACKEND"] == "file" and env["DYN_FILE_KV"].endswith("/discovery")
    assert env["DYN_SYSTEM_PORT"] == "0" and env["DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS"] == '["generate"]'
    hosts = {env[k] for k in ("DYN_TCP_RPC_HOST", "DYN_TCP_RESPONSE_STREAM_HOST", "DYN_EVENT_PLANE_HOST",
                              "DYN_SYSTEM_HOST")}
    assert hosts == {"10.0.0.1"}  # the context's host, never a wildcard
    ctx = BACKEND.worker(worker_context(config, build_topology(config).role("CTX_0")))
    assert ctx.argv[ctx.argv.index("--disaggregation-mode") + 1] == "prefill"


def test_router_and_event_plane_broker():
    config = load_config(REPO / "test_configs/disagg/perf/mocker-ctx2-gen2.yaml")
    spec = BACKEND.router(router_context(config))
    assert spec.argv == ("python3", "-m", "dynamo.frontend", "--http-host", "10.0.0.1", "--http-port", "0")
    assert spec.env["DYN_SYSTEM_PORT"] == "-1"
    services = BACKEND.services("127.0.0.1", config)
    assert list(services) == ["zmq_broker"] and BACKEND.service_env == {"zmq_broker": "DYN_ZMQ_BROKER_URL"}
    assert services["zmq_broker"].argv[-1] == "127.0.0.1"
    # the NATS event plane needs no broker: the job's NATS carries the events
    nats = load_config(REPO / "test_configs/disagg/perf/mocker-ctx2-gen2-etcd-nats.yaml")
    assert BACKEND.services("127.0.0.1", nats) == {}
    env = BACKEND.worker(worker_context(nats, build_topology(nats).role("CTX_0"))).env
    assert (env["DYN_DISCOVERY_BACKEND"], env["DYN_REQUEST_PLANE"], env["DYN_EVENT_PLANE"]) == ("etcd", "nats", "nats")
    assert "DYN_FILE_KV" not in env and "DYN_EVENT_PLANE_HOST" not in env


@pytest.mark.parametrize("config_path", MOCKER_CONFIGS, ids=lambda p: p.stem)
def test_argv_parses_with_dynamos_own_parsers(config_path):
    python = _dynamo_python()
    if python is None:
        pytest.skip("the Dynamo venv is not installed (python -m perfsanity.engines.tooling install dynamo)")
    config = load_config(config_path)
    requests = []
    for placement in build_topology(config).workers:
        spec = BACKEND.worker(worker_context(config, placement))
        requests.append({"check": "dynamo.mocker", "args": list(spec.argv[3:]), "env": dict(spec.env)})
    router = BACKEND.router(router_context(config))
    requests.append({"check": "dynamo.frontend", "args": list(router.argv[3:]), "env": dict(router.env)})
    proc = subprocess.run([str(python), str(CHECK_SCRIPT)], input=json.dumps(requests), capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for req, res in zip(requests, results, strict=True):
        assert res["ok"], f"{req['check']} rejected {req['args']}: {res['error']}"
    modes = [r["parsed"]["disaggregation_mode"] for r in results[:-1]]
    assert sorted(set(str(m).lower().split(".")[-1] for m in modes)) == ["decode", "prefill"]
    assert results[-1]["parsed"]["http_port"] == 0
