"""SGLang backend: ``sglang.launch_server`` prefill/decode workers behind ``sglang_router``.

Worker::

    [nsys profile ...] python3 -m sglang.launch_server --model-path <model> --host <host> --port 0 \\
        --disaggregation-mode prefill|decode [--disaggregation-bootstrap-port <p>] \\
        [--nnodes N --node-rank ${SLURM_PROCID}] --dist-init-addr <first host>:<p> \\
        --tp-size N <engine keys as flags> --skip-server-warmup

Router::

    python3 -m sglang_router.launch_router --pd-disaggregation \\
        --prefill http://<ctx> <bootstrap port> ... --decode http://<gen> ... --host <host> --port 0 ...

Facts (sglang 0.5.23 / sglang-router 0.3.2 from PyPI, parsed with their own argparse parsers):

* Parallelism flags are ``--tp-size/--tensor-parallel-size``, ``--pp-size``, ``--ep-size`` (no
  ``--moe-expert-parallel-size``) and ``--enable-dp-attention``; the harness's typed keys are renamed
  to those (:data:`RENAMES`). SGLang's context parallelism (``--attn-cp-size``) splits ``--tp-size``
  instead of adding GPUs, so ``context_parallel_size`` > 1 is refused.
* ``--port 0``: uvicorn binds an ephemeral port, but the post-start warmup polls
  ``http://<host>:<server_args.port>/model_info``, i.e. port 0, for 120 s and then kills the server
  (``sglang/srt/entrypoints/http_server.py``: ``_execute_server_warmup``). ``--skip-server-warmup``
  avoids that; the benchmark's own warmup requests replace it.
* With DP attention and no ``--dist-init-addr``, SGLang derives its ZMQ ports from ``--port + 233``
  (``ZMQ_TCP_PORT_DELTA`` in ``server_args.py``), i.e. port 233 when ``--port 0``; multi-node servers
  need ``--dist-init-addr`` anyway. So every worker gets an explicit ``--dist-init-addr``; SGLang also
  binds the next ~6 ports above it (one more per DP rank), so the role picks the first of
  :data:`DIST_INIT_PORT_BLOCK` free ports on the server's first node just before the start
  (``${PERFSANITY_DIST_INIT_PORT}``, ``ServerSpec.node_ports``): never a fixed port, so two jobs on
  the same nodes do not collide.
* The prefill bootstrap server listens on ``--disaggregation-bootstrap-port`` (default 8998, fixed);
  prefill servers on one node, or two jobs on one node, need different ones. The prefill role picks
  it like the dist-init port (``${PERFSANITY_BOOTSTRAP_PORT}``) unless the config sets it on purpose,
  and the router is told each one as the optional second word of ``--prefill URL [BOOTSTRAP_PORT]``
  (``sglang_router/router_args.py``: ``_parse_prefill_urls``), from the rendezvous.
* Multi-node servers: ``--nnodes``, ``--node-rank``, ``--dist-init-addr host:port``. The node rank is
  the srun task rank of the server's step (one task per node), written as ``${SLURM_PROCID}``, which
  the role expands per task.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from perfsanity.common.errors import ConfigError
from perfsanity.engines import facts
from perfsanity.engines.base import (
    PROFILES_DIR,
    SGLANG_PROFILER_ENDPOINTS,
    BackendBase,
    RouterContext,
    ServerSpec,
    WorkerContext,
    cli_flags,
    nsys_prefix,
)
from perfsanity.spec.config import Config, WorkerConfig

#: harness keys (typed in WorkerConfig, named after TensorRT-LLM) -> SGLang server argument names
RENAMES = {
    "tensor_parallel_size": "tp_size",
    "pipeline_parallel_size": "pp_size",
    "moe_expert_parallel_size": "ep_size",
    "enable_attention_dp": "enable_dp_attention",
}
#: arguments the backend sets from the topology; a config may not set them
HARNESS_OWNED = frozenset(
    {"model_path", "host", "port", "disaggregation_mode", "nnodes", "node_rank", "dist_init_addr"}
)
DISAGG_MODE = {"ctx": "prefill", "gen": "decode"}
#: env vars the role fills with ports free on the server's first node just before it starts
#: (``ServerSpec.node_ports``), published as ``<ROLE>.<VAR>``
BOOTSTRAP_PORT_VAR = "PERFSANITY_BOOTSTRAP_PORT"
DIST_INIT_PORT_VAR = "PERFSANITY_DIST_INIT_PORT"
DIST_INIT_PORT_BLOCK = 100  # SGLang binds dist-init port + 1..6 (+1 per DP rank on the Rust server)
NODE_RANK = "${SLURM_PROCID}"


def require_e2e(config: Config, backend: str) -> None:
    """Gen-only benchmark modes are a TensorRT-LLM feature (``TRTLLM_DISAGG_BENCHMARK_GEN_ONLY``)."""
    if config.kind == "disagg" and config.benchmark.mode != "e2e":
        raise ValueError(
            f"{config.name}: benchmark.mode {config.benchmark.mode!r} is TensorRT-LLM specific; "
            f"backend {backend} supports only 'e2e'"
        )


def worker_section(config: Config, kind: str) -> WorkerConfig:
    section = getattr(config.worker_config, kind, None) if kind in ("ctx", "gen", "server") else None
    if section is None:
        raise ValueError(f"{config.name}: no worker_config.{kind} section for a {kind!r} worker")
    return section


def sglang_options(worker: WorkerConfig, where: str) -> dict[str, Any]:
    """The section's engine keys under SGLang's argument names (underscores; ``tp_size`` first)."""
    raw = worker.engine_options()
    cp = raw.pop("context_parallel_size", 1)
    if cp != 1:
        raise ValueError(
            f"{where}.context_parallel_size={cp}: SGLang's context parallelism (attn_cp_size) splits "
            "tp_size instead of adding GPUs; set attn_cp_size and leave context_parallel_size at 1"
        )
    owned = sorted(HARNESS_OWNED & raw.keys())
    if owned:
        raise ValueError(f"{where}: {', '.join(owned)} is set by the harness from the topology; remove it")
    out: dict[str, Any] = {"tp_size": worker.tensor_parallel_size}
    for key, value in raw.items():
        if key == "tensor_parallel_size":
            continue
        name = RENAMES.get(key, key)
        if name in out:
            raise ValueError(f"{where}: {key} sets {name} a second time; keep one of them")
        out[name] = value
    return out


def split_generated(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(arguments renamed from the harness's typed keys, the config's SGLang-native ones)."""
    generated_names = {"tp_size", *RENAMES.values()}
    generated = {k: v for k, v in options.items() if k in generated_names}
    return generated, {k: v for k, v in options.items() if k not in generated_names}


def bootstrap_port(options: dict[str, Any]) -> str:
    """The prefill's bootstrap port: the config's on purpose, else the one its role picks at start."""
    explicit = options.get("disaggregation_bootstrap_port")
    return str(int(explicit)) if explicit is not None else f"${{{BOOTSTRAP_PORT_VAR}}}"


def node_ports(options: dict[str, Any], kind: str, *, bootstrap: bool = True) -> dict[str, int]:
    """``ServerSpec.node_ports`` of a worker: its dist-init block, and a prefill's bootstrap port unless
    the config sets it (or the engine picks its own: ``bootstrap=False``)."""
    ports = {DIST_INIT_PORT_VAR: DIST_INIT_PORT_BLOCK}
    if bootstrap and kind == "ctx" and options.get("disaggregation_bootstrap_port") is None:
        ports[BOOTSTRAP_PORT_VAR] = 1
    return ports


def dist_init_flags(ctx: WorkerContext) -> list[str]:
    """``--nnodes/--node-rank`` for multi-node servers and an explicit ``--dist-init-addr`` whose port the
    role picks on the first node at start (``${PERFSANITY_DIST_INIT_PORT}``)."""
    placement = ctx.placement
    first_host = ctx.hostnames[0] if ctx.hostnames else ctx.host
    flags: list[str] = []
    if placement.num_nodes > 1:
        flags += ["--nnodes", str(placement.num_nodes), "--node-rank", NODE_RANK]
    flags += ["--dist-init-addr", f"{first_host}:${{{DIST_INIT_PORT_VAR}}}"]
    return flags


def profiling(config: Config, role: str, job_dir: Path) -> tuple[list[str], dict[str, str]]:
    """nsys wraps the server; the torch profiler writes to SGLANG_TORCH_PROFILER_DIR once a
    ``/start_profile`` request starts it."""
    prefix = nsys_prefix(config, role, job_dir)
    env: dict[str, str] = {}
    if config.profiling.torch_profiler:
        env["SGLANG_TORCH_PROFILER_DIR"] = str(job_dir / PROFILES_DIR / role)
    return prefix, env


def prefill_bootstrap_ports(config: Config, roles: list[str]) -> tuple[list[str], dict[str, str]]:
    """Bootstrap ports of the named context roles as the router's argv words, and the router's
    ``peer_values`` (env var -> ``<ROLE>.PERFSANITY_BOOTSTRAP_PORT``) for the ones picked at start."""
    options = sglang_options(worker_section(config, "ctx"), "worker_config.ctx")
    if options.get("disaggregation_bootstrap_port") is not None:
        return [bootstrap_port(options)] * len(roles), {}
    names = {f"{BOOTSTRAP_PORT_VAR}_{role}": f"{role}.{BOOTSTRAP_PORT_VAR}" for role in roles}
    return [f"${{{var}}}" for var in names], names


def _accepted_by(flag: str, data: dict[str, Any], releases: dict[str, Any], current: str) -> str:
    """Which releases accept ``flag``: the shipped fact sets where it parses, plus the recorded history."""
    ok = [name for name, rel in releases.items()
          if name != current and facts.match_option(flag, frozenset(rel["options"]))[0] in ("exact", "prefix")]
    notes = []
    if ok:
        notes.append(f"accepted by sglang {', '.join(ok)}")
    if flag in data.get("history", {}):
        notes.append(data["history"][flag])
    return f" ({'; '.join(notes)})" if notes else ""


def check_engine_keys(config: Config, source: str | None, *, default_release: str | None = None,
                      engine: str = "SGLang") -> None:
    """Every engine key of every worker section, as the flag SGLang's parser gets, against the release's
    option strings (``perfsanity/engines/facts/sglang.json``); ConfigError naming key, engine, release."""
    data = facts.load("sglang")
    releases = data["releases"]
    name = facts.select_release(config, releases, default_release or data["default_release"],
                                engine=engine, source=source)
    options = frozenset(releases[name]["options"])
    skip = facts.unchecked(config)
    inverse = {v: k for k, v in RENAMES.items()}
    problems: list[facts.Problem] = []
    for kind in ("ctx", "gen", "server"):
        section = getattr(config.worker_config, kind, None)
        if section is None:
            continue
        try:
            keys = sglang_options(section, f"worker_config.{kind}")
        except ValueError as exc:
            raise ConfigError(source, f"worker_config.{kind}", str(exc)) from None
        for key in keys:
            written = inverse.get(key, key) if key != "tp_size" else "tensor_parallel_size"
            if written in skip or key in skip:
                continue
            why = facts.option_problem(key, options, parser=f"sglang {name}")
            if why is not None:
                flag = "--" + key.replace("_", "-")
                problems.append(facts.Problem(f"worker_config.{kind}.{written}",
                                              why + _accepted_by(flag, data, releases, name)))
    facts.raise_problems(problems, source, engine=engine, release=name, facts="sglang.json")


class SglangBackend(BackendBase):
    name = "sglang"
    #: each worker's HTTP server takes the torch profiler's start/stop (profiling.windows)
    profiler_endpoints = SGLANG_PROFILER_ENDPOINTS

    def validate(self, config: Config, source: str | None) -> None:
        check_engine_keys(config, source)

    def worker(self, ctx: WorkerContext) -> ServerSpec:
        config, placement = ctx.config, ctx.placement
        require_e2e(config, self.name)
        kind = placement.kind
        options = sglang_options(worker_section(config, kind), f"worker_config.{kind}")
        prefix, env = profiling(config, placement.role, ctx.job_dir)

        argv = [*prefix, "python3", "-m", "sglang.launch_server", "--model-path", ctx.model_path,
                "--host", ctx.host, "--port", "0"]
        if kind in DISAGG_MODE:
            argv += ["--disaggregation-mode", DISAGG_MODE[kind]]
        if kind == "ctx":
            argv += ["--disaggregation-bootstrap-port", bootstrap_port(options)]
        ports = node_ports(options, kind)
        options.pop("disaggregation_bootstrap_port", None)
        argv += dist_init_flags(ctx)
        options.setdefault("skip_server_warmup", True)  # see module docstring: warmup polls port 0
        argv += cli_flags(options)
        return ServerSpec(argv=tuple(argv), env=env, port=0, health_path="/health", node_ports=ports)

    def router(self, ctx: RouterContext) -> ServerSpec:
        config = ctx.config
        require_e2e(config, self.name)
        if config.kind != "disagg":
            raise ValueError(f"{config.name}: an aggregated config has no disaggregated router")
        if not ctx.ctx or not ctx.gen:
            raise ValueError(f"{config.name}: the router needs prefill and decode server addresses")
        argv = ["python3", "-m", "sglang_router.launch_router", "--pd-disaggregation"]
        ports, peer_values = prefill_bootstrap_ports(config, [a.role for a in ctx.ctx])
        for address, port in zip(ctx.ctx, ports, strict=True):
            argv += ["--prefill", address.url, str(port)]
        for address in ctx.gen:
            argv += ["--decode", address.url]
        argv += [
            "--host", ctx.host,
            "--port", "0",
            "--worker-startup-timeout-secs", str(config.timeouts.server_ready),
            "--request-timeout-secs", str(math.ceil(config.benchmark.request_timeout_s)),
        ]
        return ServerSpec(argv=tuple(argv), port=0, health_path="/health", peer_values=peer_values)


BACKEND = SglangBackend()
