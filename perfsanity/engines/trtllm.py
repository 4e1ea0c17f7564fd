"""TensorRT-LLM backend: ``trtllm-serve`` workers and the ``trtllm-serve disaggregated`` router.

Worker: the role's ``worker_config`` section becomes TensorRT-LLM's LLM-API YAML
(``engine/extra-llm-api-config.<ROLE>.yml``) and the process is::

    [nsys profile ...] trtllm-llmapi-launch [numactl -m 0,1] \\
        trtllm-serve <model> --host <host> --port 0 --report_addr <file> --backend pytorch --config <yaml>

What a release accepts comes from ``perfsanity/engines/facts/trtllm.yaml`` (upstream commits named
there). The release is picked per config (``metadata.engine_version``, else the container tag, else the
file's default) and its capabilities shape the argv: without ``report_addr`` no ``--report_addr``;
without ``port_zero`` a fixed ``--port`` (8000 + the server's first GPU on the node); without
``config_alias`` ``--extra_llm_api_options`` instead of ``--config``. :meth:`TrtllmBackend.validate`
checks every LLM-API key, every generated argv word and the disaggregated server YAML against the
release's facts at submit time.

Router: ``engine/server_config.yaml`` in TensorRT-LLM's disaggregated format, started with
``trtllm-serve disaggregated -c <file> -t <start timeout> -r <request timeout>``.

Facts this module relies on (TensorRT-LLM repository):

* ``--config`` is an alias of ``--extra_llm_api_options`` (``tensorrt_llm/commands/serve.py``; added by
  PR #9104) and is what ``tests/integration/defs/perf/test_perf_sanity.py`` uses. Releases from before
  that PR only know ``--extra_llm_api_options``.
* ``trtllm-serve`` refuses ``--port 0`` unless it can publish the bound port: it asserts "Port must be
  specified if disagg cluster config is not provided" unless ``--report_addr <file>`` is given (current
  main; test_perf_sanity.py starts its servers with ``--port 0 --report_addr``). ``disaggregated``
  binds the configured (hostname, port) itself, so port 0 works there without extra flags.
* ``disaggregated`` takes ``-c/--config_file``, ``-t/--server_start_timeout``, ``-r/--request_timeout``.
* gen-only benchmark modes (``examples/disaggregated/slurm/benchmark/submit.py``,
  ``jenkins/scripts/perf/local/submit.py``): ``gen_only_no_context`` sets
  ``TRTLLM_DISAGG_BENCHMARK_GEN_ONLY=1`` on the workers and the disaggregated server; ``gen_only``
  sets ``TRTLLM_DISABLE_KV_CACHE_TRANSFER_OVERLAP=1`` on the workers and
  ``TLLM_BENCHMARK_REQ_QUEUES_SIZE=<concurrency>`` on the generation workers.
* Profiling env (``tensorrt_llm/_torch/pyexecutor/py_executor.py``): ``TLLM_PROFILE_START_STOP``
  (iteration range that brackets cudaProfilerStart/Stop) and ``TLLM_TORCH_PROFILE_TRACE`` (PyTorch
  profiler trace path); submit.py adds ``TLLM_PROFILE_RECORD_GC``, ``TLLM_NVTX_DEBUG`` and
  ``NSYS_MPI_STORE_TEAMS_PER_RANK`` for nsys runs.
* NUMA: the slurm scripts run ``trtllm-llmapi-launch numactl -m 0,1 trtllm-serve ...`` when
  ``numa_bind`` is true ("only allocate memory from nodes on GB200/GB300 NVL72").
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from perfsanity.engines import facts
from perfsanity.engines.base import (
    PROFILES_DIR,
    Address,
    BackendBase,
    RouterContext,
    ServerSpec,
    WorkerContext,
    nsys_prefix,
)
from perfsanity.spec.config import Config, WorkerConfig
from perfsanity.spec.topology import build_topology

#: keys of a worker section that describe the test, not the engine (TensorRT-LLM's
#: test_perf_sanity.py drops the same keys before writing the LLM-API YAML)
HARNESS_ONLY_KEYS = frozenset(
    {
        "mode",
        "concurrency",
        "name",
        "model_name",
        "disagg_run_type",
        "gpus",
        "gpus_per_node",
        "match_mode",
        "client_configs",
        "backend",  # trtllm-serve --backend, not an LLM-API field
        "extra_llm_api_config_path",
        "server_env_var",
    }
)
DEFAULT_SERVE_BACKEND = "pytorch"
GEN_ONLY_ENV = "TRTLLM_DISAGG_BENCHMARK_GEN_ONLY"
NUMA_BIND_ARGV = ("numactl", "-m", "0,1")
#: GPU types whose nodes have the two Grace NUMA nodes ``numactl -m 0,1`` refers to
NUMA_BIND_GPU_PREFIXES = ("GB",)

ENGINE_DIR = "engine"
ENGINE_LABEL = "TensorRT-LLM"
#: first worker port for releases that refuse --port 0 (trtllm-serve's default port); servers sharing
#: a node add their first GPU index
FIXED_PORT_BASE = 8000


def worker_section(config: Config, kind: str) -> WorkerConfig:
    """The ``worker_config`` section a worker of ``kind`` (ctx | gen | server) runs with."""
    section = getattr(config.worker_config, kind, None) if kind in ("ctx", "gen", "server") else None
    if section is None:
        raise ValueError(f"{config.name}: no worker_config.{kind} section for a {kind!r} worker")
    return section


def llm_api_options(worker: WorkerConfig) -> dict[str, Any]:
    """The section's keys as written, minus the harness-only ones (order preserved, ``None`` kept:
    ``cuda_graph_config: null`` means "no CUDA graphs" to TensorRT-LLM)."""
    return {k: v for k, v in worker.engine_options().items() if k not in HARNESS_ONLY_KEYS}


def render_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, default_flow_style=False, sort_keys=False)


def mode_env(config: Config, kind: str) -> dict[str, str]:
    """Environment of the gen-only benchmark modes for a worker (``ctx``/``gen``) or the ``router``."""
    mode = config.benchmark.mode
    if config.kind != "disagg" or mode == "e2e":
        return {}
    if mode == "gen_only_no_context":
        return {GEN_ONLY_ENV: "1"}
    # gen_only: context servers run, but KV transfer is not overlapped and the generation workers
    # hold requests until the whole batch has arrived.
    if kind == "router":
        return {}
    env = {"TRTLLM_DISABLE_KV_CACHE_TRANSFER_OVERLAP": "1"}
    if kind == "gen":
        # One server lifetime serves one fill target; like TensorRT-LLM's submit.py, the first
        # concurrency of the list is used.
        env["TLLM_BENCHMARK_REQ_QUEUES_SIZE"] = str(config.benchmark.concurrency_list[0])
    return env


def profile_range(config: Config, kind: str = "") -> str:
    """``TLLM_PROFILE_START_STOP`` of a worker kind: upstream's ``ctx_profile_range`` /
    ``gen_profile_range`` when set, else ``profile_start_iter-profile_stop_iter``."""
    p = config.profiling
    per_kind = {"ctx": p.ctx_profile_range, "gen": p.gen_profile_range}.get(kind)
    return per_kind or f"{p.profile_start_iter}-{p.profile_stop_iter}"


def profiling(config: Config, role: str, job_dir: Path, kind: str = "") -> tuple[list[str], dict[str, str]]:
    """(argv prefix, env) for ``profiling.nsys_on`` / ``profiling.torch_profiler``.

    nsys writes one report per MPI rank: ``%q{SLURM_PROCID}`` is expanded by nsys itself.
    """
    p = config.profiling
    prefix = nsys_prefix(config, role, job_dir)
    env: dict[str, str] = {}
    if p.nsys_on:
        env.update(
            TLLM_PROFILE_START_STOP=profile_range(config, kind),
            TLLM_PROFILE_RECORD_GC="1",
            TLLM_NVTX_DEBUG="1",
            NSYS_MPI_STORE_TEAMS_PER_RANK="1",
        )
    if p.torch_profiler:
        env["TLLM_PROFILE_START_STOP"] = profile_range(config, kind)
        env["TLLM_TORCH_PROFILE_TRACE"] = str(job_dir / PROFILES_DIR / f"{role}.torch_trace.json")
    return prefix, env


def numa_bind(config: Config) -> list[str]:
    """``numactl -m 0,1`` when ``slurm.numa_bind`` is set, unless the GPU type is known not to be a
    Grace system (the binding names Grace's NUMA nodes 0 and 1)."""
    if not config.slurm.numa_bind:
        return []
    gpu = (config.hardware.gpu_type or "").upper()
    if gpu and not gpu.startswith(NUMA_BIND_GPU_PREFIXES):
        return []
    return list(NUMA_BIND_ARGV)


def release(config: Config, source: str | None = None) -> tuple[str, dict[str, Any]]:
    """(fact-set name, its facts) of the TensorRT-LLM release ``config`` targets."""
    data = facts.load("trtllm")
    name = facts.select_release(config, data["releases"], data["default_release"], data.get("aliases"),
                                engine=ENGINE_LABEL, source=source)
    return name, data["releases"][name]


def _option_words(argv: tuple[str, ...], after: str) -> list[str]:
    words = list(argv[argv.index(after) + 1:])
    return [w for w in words if w.startswith("-") and not w.lstrip("-").isdigit()]


def _placeholder_contexts(config: Config) -> tuple[list[WorkerContext], RouterContext]:
    """Contexts with placeholder hosts and paths: enough to render every argv and file for checking."""
    job_dir = Path("/perfsanity-validate")
    model = config.environment.model_path or "model"
    workers = build_topology(config).workers
    contexts = [WorkerContext(config, p, "127.0.0.1", job_dir, model) for p in workers]
    addresses = {kind: tuple(Address(p.role, "127.0.0.1", FIXED_PORT_BASE) for p in workers if p.kind == kind)
                 for kind in ("ctx", "gen")}
    return contexts, RouterContext(config, "127.0.0.1", job_dir, model, addresses["ctx"], addresses["gen"])


class TrtllmBackend(BackendBase):
    name = "trtllm"
    #: trtllm-serve runs one MPI rank per GPU (srun starts one task per GPU)
    ranks_per_gpu = True

    def served_model_name(self, config: Config, model_path: str) -> str:
        """trtllm-serve serves the model path it was started with (no ``--served-model-name``)."""
        return model_path

    def worker(self, ctx: WorkerContext) -> ServerSpec:
        config, placement = ctx.config, ctx.placement
        role, kind = placement.role, placement.kind
        section = worker_section(config, kind)
        config_rel = f"{ENGINE_DIR}/extra-llm-api-config.{role}.yml"
        addr_file = ctx.job_dir / ENGINE_DIR / f"{role}.addr"
        serve_backend = str(section.engine_options().get("backend", DEFAULT_SERVE_BACKEND))
        caps = release(config)[1]["capabilities"]
        port = 0 if caps["port_zero"] else FIXED_PORT_BASE + placement.gpu_offset
        report = ["--report_addr", str(addr_file)] if caps["report_addr"] and port == 0 else []

        prefix, env = profiling(config, role, ctx.job_dir, kind)
        env = {**mode_env(config, kind), **env}
        argv = [
            *prefix,
            "trtllm-llmapi-launch",
            *numa_bind(config),
            "trtllm-serve",
            ctx.model_path,
            "--host",
            ctx.host,
            "--port",
            str(port),
            *report,
            "--backend",
            serve_backend,
            "--config" if caps["config_alias"] else "--extra_llm_api_options",
            str(ctx.job_dir / config_rel),
        ]
        return ServerSpec(
            argv=tuple(argv),
            env=env,
            files={config_rel: render_yaml(llm_api_options(section))},
            port=port,
            health_path="/health",
            addr_file=str(addr_file) if report else None,
        )

    def router(self, ctx: RouterContext) -> ServerSpec:
        config = ctx.config
        if config.kind != "disagg":
            raise ValueError(f"{config.name}: an aggregated config has no disaggregated router")
        if not ctx.gen:
            raise ValueError(f"{config.name}: the router needs at least one generation server address")
        if not ctx.ctx and config.benchmark.mode != "gen_only_no_context":
            raise ValueError(f"{config.name}: the router needs context server addresses in mode "
                             f"{config.benchmark.mode!r}")
        server_config = {
            "hostname": ctx.host,
            "port": 0,
            "backend": DEFAULT_SERVE_BACKEND,
            "context_servers": {"num_instances": len(ctx.ctx), "urls": [str(a) for a in ctx.ctx]},
            "generation_servers": {"num_instances": len(ctx.gen), "urls": [str(a) for a in ctx.gen]},
        }
        config_rel = f"{ENGINE_DIR}/server_config.yaml"
        argv = (
            "trtllm-serve",
            "disaggregated",
            "-c",
            str(ctx.job_dir / config_rel),
            "-t",
            str(config.timeouts.server_ready),
            "-r",
            str(math.ceil(config.benchmark.request_timeout_s)),
        )
        return ServerSpec(
            argv=argv,
            env=mode_env(config, "router"),
            files={config_rel: render_yaml(server_config)},
            port=0,
            health_path="/health",
        )

    def validate(self, config: Config, source: str | None) -> None:
        """Every LLM-API key, generated argv word and disaggregated server key against the release's facts."""
        data = facts.load("trtllm")
        name, rel = release(config, source)
        skip = facts.unchecked(config)
        fields = set(data["llm_api_fields"])
        problems: list[facts.Problem] = []
        for kind in ("ctx", "gen", "server"):
            section = getattr(config.worker_config, kind, None)
            if section is None:
                continue
            for key in llm_api_options(section):
                if key not in fields and key not in skip:
                    problems.append(facts.Problem(f"worker_config.{kind}.{key}",
                                                  "not a TensorRT-LLM LLM-API key" + facts.suggestion(key, fields)))
            backend = section.engine_options().get("backend", DEFAULT_SERVE_BACKEND)
            if str(backend) not in rel["backend_choices"]:
                problems.append(facts.Problem(f"worker_config.{kind}.backend",
                                              f"trtllm-serve --backend {backend!r} is not one of "
                                              f"{', '.join(rel['backend_choices'])}"))
        contexts, router_ctx = _placeholder_contexts(config)
        serve_options = set(rel["serve_options"])
        for ctx in contexts:
            spec = self.worker(ctx)
            problems += [facts.Problem(f"{ctx.placement.role} argv", f"trtllm-serve has no option {w}")
                         for w in _option_words(spec.argv, "trtllm-serve") if w not in serve_options]
        if config.kind == "disagg":
            spec = self.router(router_ctx)
            problems += [facts.Problem("DISAGG_SERVER argv", f"trtllm-serve disaggregated has no option {w}")
                         for w in _option_words(spec.argv, "disaggregated") if w not in rel["disaggregated_options"]]
            schema = data["disagg_server_config"]
            for text in spec.files.values():
                server_config = yaml.safe_load(text)
                for section_name in ("context_servers", "generation_servers"):
                    problems += [facts.Problem(f"DISAGG_SERVER config {section_name}.{k}",
                                               "not a key of a disaggregated server section")
                                 for k in server_config.get(section_name) or {} if k not in schema["section"]]
        facts.raise_problems(problems, source, engine=ENGINE_LABEL, release=f"{name} ({rel['commit'][:12]})",
                             facts="trtllm.yaml")


BACKEND = TrtllmBackend()
