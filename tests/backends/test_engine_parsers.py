"""Generated command lines parsed by the engines' own argument parsers, in the project's tool venvs.

Each engine parser runs in the pinned venv perfsanity.engines.tooling builds for it (``sglang``,
``sglang-router``, ``dynamo-sglang``, ``dynamo``); ``python3 -m perfsanity.engines.tooling install sglang
sglang-router dynamo-sglang`` installs them (.ci/run does). A venv that is not installed skips the test
locally and **fails** it under ``CI=true``, naming the install command. TensorRT-LLM cannot be installed
here: its argv and files are checked against the shipped facts (perfsanity/engines/facts/trtllm.yaml).

Every flag must parse: a rejected flag fails the test, whether the backend generated it or a config
key produced it (the shipped configs are ours to fix, and submit refuses such keys too).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from backendtest_support import GOLDEN_DIR, REPO, router_context, tool_env, worker_context

from perfsanity.common.errors import ConfigError
from perfsanity.engines import facts, get_backend
from perfsanity.engines.sglang import BOOTSTRAP_PORT_VAR, DISAGG_MODE, DIST_INIT_PORT_VAR, NODE_RANK
from perfsanity.spec import envvars
from perfsanity.spec.config import Config, load_config
from perfsanity.spec.topology import build_topology

# every test here starts an engine's own parser in its tool venv (SGLang imports: seconds each)
pytestmark = pytest.mark.slow

CHECK_SCRIPT = Path(__file__).resolve().parent / "engine_parser_check.py"
GLM_SGLANG = REPO / "test_configs/disagg/perf/gb200-glm-4.7-nvfp4_1k1k_sglang_4p2d.yaml"
QWEN_DYNAMO = REPO / "test_configs/disagg/perf/gb200-qwen3-235b-fp8_1k1k_dynamo-sglang_1p1d.yaml"
TRTLLM_CONFIGS = sorted(
    p for p in [*REPO.glob("test_configs/disagg/perf/gb200-*.yaml"), *REPO.glob("test_configs/aggr/perf/*.yaml")]
    if load_config(p).metadata.backend == "trtllm"
)
#: which tool venv parses which check
CHECK_TOOL = {"sglang.launch_server": "sglang", "sglang_router.launch_router": "sglang-router",
              "dynamo.sglang": "dynamo-sglang", "dynamo.frontend": "dynamo"}
#: a config whose engine keys every SGLang release of the last year accepts: must always parse
PLAIN_SGLANG = {
    "hardware": {"num_ctx_servers": 2, "num_gen_servers": 1},
    "worker_config": {
        "ctx": {"tensor_parallel_size": 1, "mem_fraction_static": 0.8, "page_size": 64, "trust_remote_code": True,
                "disaggregation_transfer_backend": "nixl", "chunked_prefill_size": 8192},
        "gen": {"tensor_parallel_size": 8, "moe_expert_parallel_size": 8, "enable_attention_dp": True,
                "dp_size": 8, "mem_fraction_static": 0.85, "disaggregation_transfer_backend": "nixl"},
    },
}
ROLE_RANK = "1"  # what the role substitutes for ${SLURM_PROCID} on the second node


def engine_python(tool: str) -> str:
    """The interpreter of tool venv ``tool``; skip (fail under CI=true) when it is not installed."""
    return str(tool_env(tool).python)


def run_checks(requests: list[dict]) -> list[dict]:
    """Run each request in its engine's venv (one process per venv); results in request order."""
    results: dict[int, dict] = {}
    for tool in dict.fromkeys(CHECK_TOOL[r["check"]] for r in requests):
        batch = [(i, r) for i, r in enumerate(requests) if CHECK_TOOL[r["check"]] == tool]
        proc = subprocess.run([engine_python(tool), str(CHECK_SCRIPT)], input=json.dumps([r for _, r in batch]),
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{tool}: {proc.stderr[-3000:]}"
        for (i, _), result in zip(batch, json.loads(proc.stdout.strip().splitlines()[-1]), strict=True):
            results[i] = result
    return [results[i] for i in range(len(requests))]


def write_files(job_dir: Path, files: dict[str, str]) -> None:
    for rel, content in files.items():
        path = job_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


#: what the roles put in the ``${...}`` words at start (node ports the role picks, the node rank)
ROLE_VALUES = {"SLURM_PROCID": ROLE_RANK, DIST_INIT_PORT_VAR: "41000", BOOTSTRAP_PORT_VAR: "42000",
               **{f"{BOOTSTRAP_PORT_VAR}_CTX_{i}": str(42000 + i) for i in range(8)}}


def args_after(argv: tuple[str, ...], word: str) -> list[str]:
    """The argv after ``word`` as the role runs it (``${VAR}`` expanded as the role does)."""
    assert NODE_RANK.strip("${}") in ROLE_VALUES
    return [envvars.expand(a, ROLE_VALUES) for a in argv[argv.index(word) + 1:]]


def assert_parsed(result: dict, what: str) -> None:
    assert result["ok"] and not result["unknown"], (
        f"{what}: the engine ({result.get('version')}) rejects {result['unknown'] or result['error']}: {result}")


# ---- SGLang ------------------------------------------------------------------------------


def sglang_requests(config: Config, job_dir: Path):
    backend = get_backend("sglang")
    for placement in build_topology(config).workers:
        spec = backend.worker(worker_context(config, placement, job_dir))
        yield placement, {"check": "sglang.launch_server", "args": args_after(spec.argv, "sglang.launch_server")}


def check_sglang_config(config: Config, tmp_path: Path) -> None:
    cases = list(sglang_requests(config, tmp_path))
    results = run_checks([req for _, req in cases])
    for (placement, _), result in zip(cases, results, strict=True):
        assert_parsed(result, placement.role)
        parsed = result["parsed"]
        assert parsed["port"] == 0 and parsed["skip_server_warmup"] is True
        assert parsed["disaggregation_mode"] == DISAGG_MODE[placement.kind]
        assert parsed["tp_size"] == getattr(config.worker_config, placement.kind).tensor_parallel_size
        assert parsed["dist_init_addr"].endswith(":41000")  # the port the role picked
        if placement.num_nodes > 1:
            assert (parsed["nnodes"], parsed["node_rank"]) == (placement.num_nodes, int(ROLE_RANK))
        if placement.kind == "ctx":
            assert parsed["disaggregation_bootstrap_port"] == 42000


def test_sglang_worker_plain_config_parses(make_config, tmp_path):
    check_sglang_config(make_config("sglang", **PLAIN_SGLANG), tmp_path)


def test_sglang_worker_test_config_parses(tmp_path):
    check_sglang_config(load_config(GLM_SGLANG), tmp_path)


def test_sglang_rejects_what_submit_rejects(make_config, tmp_path):
    """The shipped facts and the real parser agree on a misspelled and on an ambiguous key."""
    for key in ("mem_fraction_statc", "cuda_graph_max_bs"):
        config = make_config("sglang", **{**PLAIN_SGLANG, "worker_config": {
            **PLAIN_SGLANG["worker_config"], "gen": {**PLAIN_SGLANG["worker_config"]["gen"], key: 1}}})
        with pytest.raises(ConfigError, match=key):
            get_backend("sglang").validate(config, "x.yaml")
        (result,) = run_checks([req for p, req in sglang_requests(config, tmp_path) if p.kind == "gen"][:1])
        assert not result["ok"], result


def test_sglang_router_parses(tmp_path):
    config = load_config(GLM_SGLANG)
    rctx = router_context(config, tmp_path)
    spec = get_backend("sglang").router(rctx)
    (result,) = run_checks([{"check": "sglang_router.launch_router",
                             "args": args_after(spec.argv, "sglang_router.launch_router")}])
    assert result["ok"], result
    parsed = result["parsed"]
    assert parsed["pd_disaggregation"] is True
    workers = {p.role: p for p in build_topology(config).workers}
    assert [u for u, _ in parsed["prefill_urls"]] == [a.url for a in rctx.ctx]
    assert set(workers) >= {a.role for a in rctx.ctx}
    # each prefill's bootstrap port, as that role published it
    assert [port for _, port in parsed["prefill_urls"]] == [int(ROLE_VALUES[f"{BOOTSTRAP_PORT_VAR}_{a.role}"])
                                                            for a in rctx.ctx]
    assert parsed["decode_urls"] == [a.url for a in rctx.gen]
    assert (parsed["host"], parsed["port"]) == (rctx.host, 0)
    assert parsed["worker_startup_timeout_secs"] == config.timeouts.server_ready


# ---- Dynamo + SGLang ---------------------------------------------------------------------


def check_dynamo_config(config: Config, tmp_path: Path) -> None:
    backend = get_backend("dynamo-sglang")
    cases = []
    for placement in build_topology(config).workers:
        spec = backend.worker(worker_context(config, placement, tmp_path))
        write_files(tmp_path, dict(spec.files))
        cases.append((placement, {"check": "dynamo.sglang", "args": args_after(spec.argv, "dynamo.sglang"),
                                  "env": dict(spec.env)}))
    for (placement, _), result in zip(cases, run_checks([r for _, r in cases]), strict=True):
        assert_parsed(result, placement.role)
        parsed = result["parsed"]
        section = getattr(config.worker_config, placement.kind)
        assert parsed["disaggregation_mode"] == DISAGG_MODE[placement.kind]
        assert parsed["tp_size"] == section.tensor_parallel_size
        assert parsed["model_path"] == config.environment.model_path
        if placement.num_nodes > 1:
            assert (parsed["nnodes"], parsed["node_rank"]) == (placement.num_nodes, int(ROLE_RANK))


def test_dynamo_worker_plain_config_parses(make_config, tmp_path):
    check_dynamo_config(make_config("dynamo-sglang", **PLAIN_SGLANG), tmp_path)


def test_dynamo_worker_test_config_parses(tmp_path):
    check_dynamo_config(load_config(QWEN_DYNAMO), tmp_path)


def test_dynamo_frontend_parses(tmp_path):
    config = load_config(QWEN_DYNAMO)
    spec = get_backend("dynamo-sglang").router(router_context(config, tmp_path))
    (result,) = run_checks([{"check": "dynamo.frontend", "args": args_after(spec.argv, "dynamo.frontend"),
                             "env": dict(spec.env)}])
    assert result["ok"], result
    assert result["parsed"] == {"http_host": "10.0.0.1", "http_port": 0, "discovery_backend": "file",
                                "request_plane": "tcp", "event_plane": "zmq"}


# ---- TensorRT-LLM (facts; the wheel does not install here) ------------------------------------


@pytest.mark.parametrize("path", TRTLLM_CONFIGS, ids=[p.stem for p in TRTLLM_CONFIGS])
@pytest.mark.parametrize("release", list(facts.load("trtllm")["releases"]))
def test_trtllm_argv_and_files_accepted_by_facts(path, release):
    """Every generated argv and file of every shipped trtllm config, for every release in the facts."""
    config = load_config(path, overrides={"metadata.engine_version": release})
    get_backend("trtllm").validate(config, str(path))


# ---- goldens: only parser-accepted output ----------------------------------------------------


def golden_argv(path: Path) -> list[str]:
    """The argv of one golden file (the YAML list under ``argv:``)."""
    lines = path.read_text().splitlines()
    start = lines.index("argv:") + 1
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("  "))
    return [yaml.safe_load(line.strip()) for line in lines[start:end]]


GOLDENS = sorted(GOLDEN_DIR.glob("*/*.txt"))


@pytest.mark.parametrize("path", GOLDENS, ids=[f"{p.parent.name}/{p.stem}" for p in GOLDENS])
def test_golden_accepted(path, tmp_path):
    """A golden holds only what the engine's parser (or, for TensorRT-LLM, the facts) accepts."""
    argv = [str(a) for a in golden_argv(path)]
    module = next((m for m in CHECK_TOOL if m in argv), None)
    if module == "dynamo.sglang":
        # its flags come with the YAML section file: parse the rendered specs with their files
        # (tests/backends/test_golden.py pins this golden to exactly that rendering)
        config_path = REPO / "test_configs/disagg/perf" / f"{path.parent.name}.yaml"
        assert config_path.is_file(), f"{path}: no dynamo config for this golden"
        check_dynamo_config(load_config(config_path), tmp_path)
        return
    if module is not None:
        (result,) = run_checks([{"check": module, "args": args_after(tuple(argv), module)}])
        assert_parsed(result, str(path))
        return
    assert "trtllm-serve" in argv, f"{path}: no known engine in {argv}"
    rel = facts.load("trtllm")["releases"][facts.load("trtllm")["default_release"]]
    after = argv[argv.index("trtllm-serve") + 1:]
    allowed = rel["disaggregated_options"] if after[:1] == ["disaggregated"] else rel["serve_options"]
    bad = [w for w in after if w.startswith("-") and not w.lstrip("-").isdigit() and w not in allowed]
    assert not bad, f"{path}: TensorRT-LLM {facts.load('trtllm')['default_release']} has no option {bad}"
