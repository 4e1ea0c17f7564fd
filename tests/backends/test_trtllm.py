"""TensorRT-LLM backend: LLM-API YAML, argv shape, gen-only and profiling env, router config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from backendtest_support import check_golden, render_all, router_context, worker_context

from perfsanity.engines import get_backend, names
from perfsanity.engines import trtllm as tb
from perfsanity.spec.topology import build_topology


def _worker(config, role):
    placement = build_topology(config).role(role)
    return tb.BACKEND.worker(worker_context(config, placement))


def _yaml(spec):
    (text,) = spec.files.values()
    return yaml.safe_load(text)


def test_registry_and_protocol():
    assert get_backend("trtllm") is tb.BACKEND
    for name in ("trtllm", "sglang", "dynamo-sglang"):
        assert name in names()
        backend = get_backend(name)
        assert backend.name == name
        assert backend.tools == ()


def test_yaml_keeps_nested_dicts_none_and_parallelism(make_config):
    config = make_config(worker_config={"gen": {
        "tensor_parallel_size": 2,
        "moe_expert_parallel_size": 2,
        "kv_cache_config": {"free_gpu_memory_fraction": 0.8, "dtype": "fp8"},
        "cuda_graph_config": None,
        "speculative_config": {"decoding_type": "MTP", "num_nextn_predict_layers": 3},
        "enable_chunked_prefill": False,
        "name": "harness-only",
        "client_configs": [{"concurrency": 1}],
    }})
    spec = _worker(config, "GEN_0")
    assert list(spec.files) == ["engine/extra-llm-api-config.GEN_0.yml"]
    data = _yaml(spec)
    assert data == {
        "tensor_parallel_size": 2,
        "moe_expert_parallel_size": 2,
        "kv_cache_config": {"free_gpu_memory_fraction": 0.8, "dtype": "fp8"},
        "cuda_graph_config": None,  # "no CUDA graphs" to TensorRT-LLM: must survive as null
        "speculative_config": {"decoding_type": "MTP", "num_nextn_predict_layers": 3},
        "enable_chunked_prefill": False,  # booleans stay YAML booleans
    }
    text = spec.files["engine/extra-llm-api-config.GEN_0.yml"]
    assert "cuda_graph_config: null" in text
    assert "enable_chunked_prefill: false" in text


def test_worker_argv_shape(make_config):
    config = make_config()
    spec = _worker(config, "CTX_0")
    job = "/jobs/unit"
    assert spec.argv == (
        "trtllm-llmapi-launch",
        "trtllm-serve", "/models/tiny",
        "--host", "10.0.0.1",
        "--port", "0",
        "--report_addr", f"{job}/engine/CTX_0.addr",
        "--backend", "pytorch",
        "--config", f"{job}/engine/extra-llm-api-config.CTX_0.yml",
    )
    assert spec.port == 0 and spec.health_path == "/health" and spec.tool is None
    assert spec.env == {}


def test_serve_backend_key_becomes_flag_not_yaml(make_config):
    config = make_config(worker_config={"gen": {"backend": "_autodeploy", "max_batch_size": 8}})
    spec = _worker(config, "GEN_0")
    assert spec.argv[spec.argv.index("--backend") + 1] == "_autodeploy"
    assert _yaml(spec) == {"tensor_parallel_size": 1, "max_batch_size": 8}


@pytest.mark.parametrize(
    ("gpu_type", "numa", "expected"),
    [("GB200", True, True), ("GB300", True, True), (None, True, True), ("B200", True, False), ("GB200", False, False)],
)
def test_numa_bind_sits_between_launcher_and_serve(make_config, gpu_type, numa, expected):
    config = make_config(slurm={"numa_bind": numa}, hardware={"gpu_type": gpu_type})
    argv = _worker(config, "GEN_0").argv
    if expected:
        i = argv.index("trtllm-llmapi-launch")
        assert argv[i + 1: i + 5] == ("numactl", "-m", "0,1", "trtllm-serve")
    else:
        assert "numactl" not in argv


def test_gen_only_no_context(make_config):
    config = make_config(benchmark={"mode": "gen_only_no_context"})
    topo = build_topology(config)
    assert [p.role for p in topo.workers] == ["GEN_0"]
    assert _worker(config, "GEN_0").env == {"TRTLLM_DISAGG_BENCHMARK_GEN_ONLY": "1"}
    rctx = router_context(config)
    assert rctx.ctx == ()
    router = tb.BACKEND.router(rctx)
    assert router.env == {"TRTLLM_DISAGG_BENCHMARK_GEN_ONLY": "1"}
    server_config = yaml.safe_load(router.files["engine/server_config.yaml"])
    assert server_config["context_servers"] == {"num_instances": 0, "urls": []}
    assert server_config["generation_servers"] == {"num_instances": 1, "urls": ["10.0.0.1:8101"]}


def test_gen_only(make_config):
    config = make_config(benchmark={"mode": "gen_only", "concurrency_list": "32 64"})
    assert _worker(config, "CTX_0").env == {"TRTLLM_DISABLE_KV_CACHE_TRANSFER_OVERLAP": "1"}
    assert _worker(config, "GEN_0").env == {
        "TRTLLM_DISABLE_KV_CACHE_TRANSFER_OVERLAP": "1",
        "TLLM_BENCHMARK_REQ_QUEUES_SIZE": "32",
    }
    assert tb.BACKEND.router(router_context(config)).env == {}


def test_e2e_and_aggregated_have_no_mode_env(make_config):
    assert _worker(make_config(), "GEN_0").env == {}
    aggr = make_config(kind="aggr", benchmark={"mode": "gen_only"})  # mode is meaningless for aggr
    assert _worker(aggr, "SERVER_0").env == {}


def test_nsys_wraps_launcher_and_sets_profile_env(make_config):
    config = make_config(slurm={"numa_bind": True},
                         profiling={"nsys_on": True, "nsys_args": "-t cuda,nvtx -c cudaProfilerApi",
                                    "profile_start_iter": 100, "profile_stop_iter": 150})
    spec = _worker(config, "GEN_0")
    assert spec.argv[:10] == ("nsys", "profile", "-o", "/jobs/unit/profiles/GEN_0.%q{SLURM_PROCID}", "-f", "true",
                              "-t", "cuda,nvtx", "-c", "cudaProfilerApi")
    assert spec.argv[10:15] == ("trtllm-llmapi-launch", "numactl", "-m", "0,1", "trtllm-serve")
    assert spec.env == {
        "TLLM_PROFILE_START_STOP": "100-150",
        "TLLM_PROFILE_RECORD_GC": "1",
        "TLLM_NVTX_DEBUG": "1",
        "NSYS_MPI_STORE_TEAMS_PER_RANK": "1",
    }


def test_torch_profiler_env(make_config):
    config = make_config(profiling={"torch_profiler": True})
    spec = _worker(config, "CTX_0")
    assert spec.argv[0] == "trtllm-llmapi-launch"
    assert spec.env == {
        "TLLM_PROFILE_START_STOP": "10-20",
        "TLLM_TORCH_PROFILE_TRACE": "/jobs/unit/profiles/CTX_0.torch_trace.json",
    }


def test_router_config_and_timeouts(make_config):
    config = make_config(hardware={"num_ctx_servers": 2, "num_gen_servers": 3},
                         timeouts={"server_ready": 2400}, benchmark={"request_timeout_s": 90.5})
    spec = tb.BACKEND.router(router_context(config))
    assert spec.argv == ("trtllm-serve", "disaggregated", "-c", "/jobs/unit/engine/server_config.yaml",
                         "-t", "2400", "-r", "91")
    assert yaml.safe_load(spec.files["engine/server_config.yaml"]) == {
        "hostname": "10.0.0.1",
        "port": 0,
        "backend": "pytorch",
        "context_servers": {"num_instances": 2, "urls": ["10.0.0.1:8001", "10.0.0.2:8002"]},
        "generation_servers": {"num_instances": 3, "urls": ["10.0.0.1:8101", "10.0.0.1:8102", "10.0.0.1:8103"]},
    }


def test_router_refuses_aggregated_and_missing_servers(make_config):
    with pytest.raises(ValueError, match="aggregated"):
        tb.BACKEND.router(router_context(make_config(kind="aggr")))
    config = make_config()
    rctx = router_context(config)
    with pytest.raises(ValueError, match="context server"):
        tb.BACKEND.router(type(rctx)(**{**rctx.__dict__, "ctx": ()}))


def test_golden_check_detects_drift(tmp_path: Path, make_config, monkeypatch):
    monkeypatch.delenv("PERFSANITY_UPDATE_GOLDEN", raising=False)
    rendered = render_all(make_config())
    with pytest.raises(AssertionError, match="missing golden files"):
        check_golden(tmp_path, rendered)
    for name, text in rendered.items():
        (tmp_path / name).write_text(text)
    check_golden(tmp_path, rendered)
    (tmp_path / "GEN_0.txt").write_text(rendered["GEN_0.txt"].replace("--port\n  0", "--port\n  1"))
    (tmp_path / "OLD_0.txt").write_text("x")
    with pytest.raises(AssertionError, match="stale golden files") as err:
        check_golden(tmp_path, rendered)
    assert "-  1" in str(err.value) and "+  0" in str(err.value)
