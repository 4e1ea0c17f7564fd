"""SGLang and Dynamo+SGLang backends: key mapping, argv shape, ports, multi-node flags, discovery env."""

from __future__ import annotations

import json

import pytest
import yaml
from backendtest_support import router_context, worker_context

from perfsanity.engines import dynamo_sglang as db
from perfsanity.engines import sglang as sb
from perfsanity.engines.base import cli_flags
from perfsanity.spec.config import WorkerConfig
from perfsanity.spec.topology import build_topology


def _worker(backend, config, role):
    return backend.worker(worker_context(config, build_topology(config).role(role)))


def _after(argv, flag, n=1):
    i = argv.index(flag)
    return argv[i + 1: i + 1 + n]


def test_cli_flags_mapping():
    flags = cli_flags({
        "mem_fraction_static": 0.85,
        "trust_remote_code": True,
        "enable_mixed_chunk": False,
        "chunked_prefill_size": None,
        "cuda_graph_bs": [1, 2, 4],
        "json_model_override_args": {"b": 1, "a": "x"},
    })
    assert flags == [
        "--mem-fraction-static", "0.85",
        "--trust-remote-code",
        "--cuda-graph-bs", "1", "2", "4",
        "--json-model-override-args", json.dumps({"a": "x", "b": 1}),
    ]


def test_harness_keys_renamed_to_sglang_names(make_config):
    config = make_config("sglang", worker_config={"gen": {
        "tensor_parallel_size": 4, "pipeline_parallel_size": 1, "moe_expert_parallel_size": 4,
        "enable_attention_dp": True, "dp_size": 4,
    }})
    options = sb.sglang_options(config.worker_config.gen, "worker_config.gen")
    assert options == {"tp_size": 4, "pp_size": 1, "ep_size": 4, "enable_dp_attention": True, "dp_size": 4}
    argv = _worker(sb.BACKEND, config, "GEN_0").argv
    assert _after(argv, "--tp-size") == ("4",) and _after(argv, "--ep-size") == ("4",)
    assert "--enable-dp-attention" in argv
    assert not any(a.startswith(("--tensor-parallel", "--moe-expert", "--enable-attention-dp")) for a in argv)


def test_tp_size_always_given(make_config):
    base = make_config("sglang")
    config = base.model_copy(update={"worker_config": base.worker_config.model_copy(
        update={"ctx": WorkerConfig(mem_fraction_static=0.8)})})
    assert "tensor_parallel_size" not in config.worker_config.ctx.engine_options()
    argv = _worker(sb.BACKEND, config, "CTX_0").argv
    assert _after(argv, "--tp-size") == ("1",)


@pytest.mark.parametrize(
    ("section", "match"),
    [({"context_parallel_size": 2, "tensor_parallel_size": 2}, "context_parallel_size=2"),
     ({"port": 30000}, "port is set by the harness"),
     ({"dist_init_addr": "h:1"}, "dist_init_addr is set by the harness"),
     ({"tensor_parallel_size": 2, "tp_size": 2}, None)],
)
def test_refused_keys(make_config, section, match):
    config = make_config("sglang", worker_config={"gen": section})
    if match is None:  # tp_size duplicates the typed key: explicit error rather than two flags
        with pytest.raises(ValueError, match="tp_size a second time"):
            sb.sglang_options(config.worker_config.gen, "worker_config.gen")
        return
    with pytest.raises(ValueError, match=match):
        _worker(sb.BACKEND, config, "GEN_0")


def test_worker_argv_shape(make_config):
    config = make_config("sglang", worker_config={"ctx": {"trust_remote_code": True}})
    argv = _worker(sb.BACKEND, config, "CTX_0").argv
    assert argv[:10] == ("python3", "-m", "sglang.launch_server", "--model-path", "/models/tiny",
                         "--host", "10.0.0.1", "--port", "0", "--disaggregation-mode")
    assert _after(argv, "--disaggregation-mode") == ("prefill",)
    assert argv[-1] == "--skip-server-warmup"
    gen = _worker(sb.BACKEND, config, "GEN_0").argv
    assert _after(gen, "--disaggregation-mode") == ("decode",)
    assert "--disaggregation-bootstrap-port" not in gen


def test_skip_warmup_not_duplicated(make_config):
    config = make_config("sglang", worker_config={"gen": {"skip_server_warmup": True}})
    assert _worker(sb.BACKEND, config, "GEN_0").argv.count("--skip-server-warmup") == 1


def test_packed_prefill_servers_get_ports_picked_at_start_and_router_matches(make_config):
    # four 1-GPU prefill servers share one 4-GPU node with the decode server's node full: no port is
    # fixed in their argv; each role picks its own at start and the router reads them from the rendezvous
    config = make_config("sglang", hardware={"num_ctx_servers": 4, "num_gen_servers": 1},
                         worker_config={"gen": {"tensor_parallel_size": 4}})
    topo = build_topology(config)
    ctx_roles = [p for p in topo.of_kind("ctx")]
    assert {p.nodes for p in ctx_roles} == {(1,)}
    for p in ctx_roles:
        spec = _worker(sb.BACKEND, config, p.role)
        assert _after(spec.argv, "--disaggregation-bootstrap-port") == ("${PERFSANITY_BOOTSTRAP_PORT}",)
        assert _after(spec.argv, "--dist-init-addr") == ("10.0.0.2:${PERFSANITY_DIST_INIT_PORT}",)
        assert spec.node_ports == {"PERFSANITY_DIST_INIT_PORT": sb.DIST_INIT_PORT_BLOCK,
                                   "PERFSANITY_BOOTSTRAP_PORT": 1}
    assert _worker(sb.BACKEND, config, "GEN_0").node_ports == {"PERFSANITY_DIST_INIT_PORT": sb.DIST_INIT_PORT_BLOCK}
    router = sb.BACKEND.router(router_context(config))
    prefill = [router.argv[i + 1: i + 3] for i, a in enumerate(router.argv) if a == "--prefill"]
    assert prefill == [(f"http://10.0.0.2:800{i + 1}", f"${{PERFSANITY_BOOTSTRAP_PORT_CTX_{i}}}") for i in range(4)]
    assert router.peer_values == {f"PERFSANITY_BOOTSTRAP_PORT_CTX_{i}": f"CTX_{i}.PERFSANITY_BOOTSTRAP_PORT"
                                  for i in range(4)}


def test_explicit_bootstrap_port_used_by_worker_and_router(make_config):
    config = make_config("sglang", worker_config={"ctx": {"disaggregation_bootstrap_port": 9100}})
    argv = _worker(sb.BACKEND, config, "CTX_0").argv
    assert argv.count("--disaggregation-bootstrap-port") == 1
    assert _after(argv, "--disaggregation-bootstrap-port") == ("9100",)
    router = sb.BACKEND.router(router_context(config))
    assert _after(router.argv, "--prefill", 2) == ("http://10.0.0.1:8001", "9100")
    assert router.peer_values == {}  # set on purpose: nothing to wait for
    assert "PERFSANITY_BOOTSTRAP_PORT" not in _worker(sb.BACKEND, config, "CTX_0").node_ports


def test_multi_node_server(make_config):
    config = make_config("sglang", worker_config={"gen": {"tensor_parallel_size": 8}})
    placement = build_topology(config).role("GEN_0")
    assert placement.nodes == (0, 1)
    argv = sb.BACKEND.worker(worker_context(config, placement)).argv
    assert _after(argv, "--nnodes", 3) == ("2", "--node-rank", "${SLURM_PROCID}")
    assert _after(argv, "--dist-init-addr") == ("10.0.0.1:${PERFSANITY_DIST_INIT_PORT}",)
    assert "--nnodes" not in _worker(sb.BACKEND, config, "CTX_0").argv


def test_router_argv(make_config):
    config = make_config("sglang", timeouts={"server_ready": 900}, benchmark={"request_timeout_s": 30})
    spec = sb.BACKEND.router(router_context(config))
    assert spec.argv == (
        "python3", "-m", "sglang_router.launch_router", "--pd-disaggregation",
        "--prefill", "http://10.0.0.1:8001", "${PERFSANITY_BOOTSTRAP_PORT_CTX_0}",  # CTX_0's, picked at its start
        "--decode", "http://10.0.0.1:8101",
        "--host", "10.0.0.1", "--port", "0",
        "--worker-startup-timeout-secs", "900", "--request-timeout-secs", "30",
    )


def test_aggregated_sglang_server(make_config):
    config = make_config("sglang", kind="aggr")
    argv = _worker(sb.BACKEND, config, "SERVER_0").argv
    assert "--disaggregation-mode" not in argv and "--port" in argv
    with pytest.raises(ValueError, match="aggregated"):
        sb.BACKEND.router(router_context(config))


@pytest.mark.parametrize("backend", [sb.BACKEND, db.BACKEND], ids=["sglang", "dynamo-sglang"])
@pytest.mark.parametrize("mode", ["gen_only", "gen_only_no_context"])
def test_gen_only_modes_refused(make_config, backend, mode):
    config = make_config(backend.name, benchmark={"mode": mode})
    with pytest.raises(ValueError, match="TensorRT-LLM specific"):
        _worker(backend, config, "GEN_0")
    with pytest.raises(ValueError, match="TensorRT-LLM specific"):
        backend.router(router_context(config))


def test_sglang_profiling(make_config):
    config = make_config("sglang", profiling={"nsys_on": True, "torch_profiler": True, "nsys_args": "-t cuda"})
    spec = _worker(sb.BACKEND, config, "GEN_0")
    assert spec.argv[:8] == ("nsys", "profile", "-o", "/jobs/unit/profiles/GEN_0.%q{SLURM_PROCID}", "-f", "true",
                             "-t", "cuda")
    assert spec.argv[8:11] == ("python3", "-m", "sglang.launch_server")
    assert spec.env == {"SGLANG_TORCH_PROFILER_DIR": "/jobs/unit/profiles/GEN_0"}


# ---- dynamo-sglang -----------------------------------------------------------------------


def test_dynamo_config_file_sections(make_config):
    config = make_config("dynamo-sglang", worker_config={
        "ctx": {"tensor_parallel_size": 2, "moe_expert_parallel_size": 2, "page_size": 64,
                "trust_remote_code": True, "chunked_prefill_size": None,
                "json_model_override_args": {"a": 1}},
        "gen": {"tensor_parallel_size": 1, "enable_attention_dp": True, "cuda_graph_bs": [1, 2]},
    })
    spec = _worker(db.BACKEND, config, "CTX_0")
    assert list(spec.files) == ["engine/sglang_config.yaml"]
    data = yaml.safe_load(spec.files["engine/sglang_config.yaml"])
    assert list(data) == ["prefill", "decode"]
    assert data["prefill"] == {"page-size": 64, "trust-remote-code": True, "json-model-override-args": {"a": 1},
                               "disaggregation-mode": "prefill"}
    assert data["decode"] == {"cuda-graph-bs": [1, 2], "disaggregation-mode": "decode"}
    gen = _worker(db.BACKEND, config, "GEN_0")
    assert gen.files == spec.files
    # harness-derived parallelism goes on each role's argv, not into the shared file
    assert spec.argv[-4:] == ("--tp-size", "2", "--ep-size", "2")
    assert gen.argv[-3:] == ("--tp-size", "1", "--enable-dp-attention")


def test_dynamo_worker_argv_and_env(make_config):
    config = make_config("dynamo-sglang")
    spec = _worker(db.BACKEND, config, "GEN_0")
    assert spec.argv == ("python3", "-m", "dynamo.sglang", "--model-path", "/models/tiny",
                         "--disagg-config", "/jobs/unit/engine/sglang_config.yaml", "--disagg-config-key", "decode",
                         "--dist-init-addr", "10.0.0.1:${PERFSANITY_DIST_INIT_PORT}", "--tp-size", "1")
    assert spec.node_ports == {"PERFSANITY_DIST_INIT_PORT": sb.DIST_INIT_PORT_BLOCK}  # bootstrap: dynamo's own
    assert spec.env == {
        "DYN_DISCOVERY_BACKEND": "file",
        "DYN_FILE_KV": "/jobs/unit/discovery",
        "DYN_REQUEST_PLANE": "tcp",
        "DYN_EVENT_PLANE": "zmq",
        "DYN_TCP_RPC_HOST": "10.0.0.1",
        "DYN_TCP_RESPONSE_STREAM_HOST": "10.0.0.1",
        "DYN_EVENT_PLANE_HOST": "10.0.0.1",
        "DYN_SYSTEM_HOST": "10.0.0.1",
        "DYN_SYSTEM_PORT": "0",
    }
    assert spec.port == 0 and spec.health_path == "/health"
    # CTX_0 shares node 0: OS-assigned system port and a dist-init port of its own, picked at start
    ctx = _worker(db.BACKEND, config, "CTX_0")
    assert ctx.env["DYN_SYSTEM_PORT"] == "0" and ctx.port == 0
    assert _after(ctx.argv, "--disagg-config-key") == ("prefill",)
    assert _after(ctx.argv, "--dist-init-addr") == ("10.0.0.1:${PERFSANITY_DIST_INIT_PORT}",)
    assert "--disaggregation-bootstrap-port" not in ctx.argv and ctx.node_ports == spec.node_ports


def test_dynamo_frontend(make_config):
    config = make_config("dynamo-sglang")
    spec = db.BACKEND.router(router_context(config))
    assert spec.argv == ("python3", "-m", "dynamo.frontend", "--http-host", "10.0.0.1", "--http-port", "0")
    assert spec.env["DYN_DISCOVERY_BACKEND"] == "file" and spec.env["DYN_FILE_KV"] == "/jobs/unit/discovery"
    assert "DYN_SYSTEM_PORT" not in spec.env
    assert spec.port == 0


def test_dynamo_needs_discovery_dir_and_disagg(make_config):
    config = make_config("dynamo-sglang")
    placement = build_topology(config).role("GEN_0")
    wctx = worker_context(config, placement)
    with pytest.raises(ValueError, match="discovery_dir"):
        db.BACKEND.worker(type(wctx)(**{**wctx.__dict__, "discovery_dir": None}))
    aggr = make_config("dynamo-sglang", kind="aggr")
    with pytest.raises(ValueError, match="disaggregated configs only"):
        _worker(db.BACKEND, aggr, "SERVER_0")


def test_dynamo_sglang_runs_the_runtime_env_the_mocker_e2e_runs():
    # the GPU config and the CPU stand-in config with the same infra give every Dynamo process the
    # same discovery / plane / host env (the mocker adds only its offline and status-server settings)
    from backendtest_support import REPO

    from perfsanity.engines import dynamo_mocker as mb
    from perfsanity.spec.config import load_config

    gpu = load_config(REPO / "test_configs/disagg/perf/gb200-qwen3-235b-fp8_1k1k_dynamo-sglang_1p1d_etcd-nats.yaml")
    cpu = load_config(REPO / "test_configs/disagg/perf/mocker-ctx2-gen2-etcd-nats.yaml")
    assert gpu.infra == cpu.infra and gpu.frontend == cpu.frontend
    mocker_only = {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DYN_SDK_DISABLE_ANSI_LOGGING",
                   "DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS", "DYN_SYSTEM_HOST", "DYN_SYSTEM_PORT"}
    for role in ("CTX_0", "GEN_0"):
        g = _worker(db.BACKEND, gpu, role).env
        c = _worker(mb.BACKEND, cpu, role).env
        assert {k: v for k, v in c.items() if k not in mocker_only} == \
            {k: v for k, v in g.items() if k not in mocker_only}
        assert g["DYN_DISCOVERY_BACKEND"] == "etcd" and "DYN_FILE_KV" not in g
    g_fe, c_fe = db.BACKEND.router(router_context(gpu)).env, mb.BACKEND.router(router_context(cpu)).env
    assert {k: v for k, v in c_fe.items() if k not in mocker_only} == \
        {k: v for k, v in g_fe.items() if k not in mocker_only}
