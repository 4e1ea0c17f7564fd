"""Dynamo frontend + ``dynamo.mocker`` workers: the CPU stand-in for disaggregated serving.

A real disaggregated serving path (Dynamo's OpenAI frontend, router, request plane, event plane,
prefill→decode hand-off) with simulated compute. By default file discovery in the job's shared
``discovery/`` dir, TCP request plane and ZMQ event plane; ``config.infra`` switches to the job's
etcd / NATS, and ``config.frontend`` to several frontends behind nginx, exactly as dynamo-sglang
(:mod:`perfsanity.engines.dynamo_runtime`). Measured facts are in ``docs/dynamo-mocker.md``.

Event plane: a per-job broker (:mod:`perfsanity.engines.zmq_broker`, a job service started by
DISAGG_SERVER) keeps every socket on the bind host; without it Dynamo binds event-plane sockets on
0.0.0.0.

Ports: the frontend takes ``--http-port 0``; each worker's system status server takes
``DYN_SYSTEM_PORT=0``; request-plane ports are OS-assigned. ``/health`` on a worker's status server
answers 200 once its ``generate`` endpoint is ready (``DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS``).
"""

from __future__ import annotations

from types import MappingProxyType

from perfsanity.engines import facts, zmq_broker
from perfsanity.engines.base import (
    SGLANG_PROFILER_ENDPOINTS,
    BackendBase,
    RouterContext,
    ServerSpec,
    WorkerContext,
    cli_flags,
)
from perfsanity.engines.dynamo_runtime import FrontendDiscovery, runtime_env
from perfsanity.spec.config import Config
from perfsanity.spec.infra import Infra

# typed parallelism keys describe the (simulated) deployment's GPUs; the mocker takes none of them
_HARNESS_KEYS = ("tensor_parallel_size", "pipeline_parallel_size", "context_parallel_size",
                 "moe_expert_parallel_size", "enable_attention_dp")
_MODE = {"ctx": "prefill", "gen": "decode", "server": "agg"}
#: flags the backend writes itself (a worker section must not set them)
_OWN_FLAGS = ("--model-path", "--model-name", "--disaggregation-mode")


def check_mocker_keys(config: Config, source: str | None) -> None:
    """Every engine key of every worker section, as the flag ``dynamo.mocker`` gets, against its parser's
    option strings for the ai-dynamo release (``perfsanity/engines/facts/dynamo_mocker.json``); one
    ConfigError naming key, engine and release."""
    data = facts.load("dynamo_mocker")
    releases = data["releases"]
    name = facts.select_release(config, releases, data["default_release"], engine="dynamo.mocker", source=source)
    options = frozenset(releases[name]["options"])
    skip = facts.unchecked(config)
    problems: list[facts.Problem] = []
    for kind in ("ctx", "gen", "server"):
        section = getattr(config.worker_config, kind, None)
        if section is None:
            continue
        for key in section.engine_options():
            if key in _HARNESS_KEYS or key in skip:
                continue
            where = f"worker_config.{kind}.{key}"
            why = facts.option_problem(key, options, parser=f"dynamo.mocker {name}")
            if why is not None:
                problems.append(facts.Problem(where, why))
                continue
            _, matches = facts.match_option("--" + key.replace("_", "-"), options)
            if matches[0] in _OWN_FLAGS:
                problems.append(facts.Problem(where, f"{matches[0]} is set by perfsanity (metadata.model_name, "
                                              "environment.model_path and the role's mode)"))
    facts.raise_problems(problems, source, engine="dynamo.mocker", release=name, facts="dynamo_mocker.json")


def dynamo_env(infra: Infra, host: str, discovery_dir: str) -> dict[str, str]:
    """Discovery and planes per ``config.infra``, everything bound to ``host``, offline."""
    return {
        **runtime_env(infra, host, discovery_dir),
        "DYN_SYSTEM_HOST": host,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "DYN_SDK_DISABLE_ANSI_LOGGING": "1",
    }


class DynamoMockerBackend(FrontendDiscovery, BackendBase):
    name = "dynamo-mocker"
    tools = ("dynamo",)
    #: simulated compute: runs on any machine, so its test cases run locally
    needs_gpu = False
    has_default_model = True
    #: etcd / NATS / several frontends behind nginx per ``config.infra`` and ``config.frontend``
    uses_job_infra = True
    #: the CPU stand-in gets SGLang's profiler calls, so their timing around the benchmark windows is
    #: tested end to end; its status server does not serve them (the answer, a 404, is recorded)
    profiler_endpoints = SGLANG_PROFILER_ENDPOINTS
    #: the frontend discovers workers through the shared discovery dir: it starts with them
    router_needs_worker_addresses = False
    #: job service -> env var: every worker and the frontend connect to the job's event-plane broker
    service_env = MappingProxyType({"zmq_broker": "DYN_ZMQ_BROKER_URL"})

    def validate(self, config: Config, source: str | None) -> None:
        check_mocker_keys(config, source)

    def services(self, host: str, config: Config) -> dict[str, ServerSpec]:
        """The ZMQ event-plane broker, started by DISAGG_SERVER before the workers start (none with the
        NATS event plane: the job's NATS carries the events)."""
        if config.infra.event_plane != "zmq":
            return {}
        argv = ("python3", zmq_broker.__file__, host)
        return {"zmq_broker": ServerSpec(argv=argv, tool="dynamo")}

    def default_model_path(self) -> str:
        """The tiny offline model (:mod:`perfsanity.engines.model_assets`), generated once if missing."""
        from perfsanity.engines.model_assets import ensure_tiny_model

        return str(ensure_tiny_model())

    def worker(self, ctx: WorkerContext) -> ServerSpec:
        kind = ctx.placement.kind
        worker = {"ctx": ctx.config.worker_config.ctx, "gen": ctx.config.worker_config.gen,
                  "server": ctx.config.worker_config.server}[kind]
        options = worker.engine_options() if worker is not None else {}
        argv = ["python3", "-m", "dynamo.mocker", "--model-path", ctx.model_path,
                "--model-name", ctx.config.metadata.model_name, "--disaggregation-mode", _MODE[kind],
                *cli_flags(options, skip=_HARNESS_KEYS)]
        env = dynamo_env(ctx.config.infra, ctx.host, str(ctx.discovery_dir or ctx.job_dir / "discovery"))
        env["DYN_SYSTEM_PORT"] = "0"
        env["DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS"] = '["generate"]'
        return ServerSpec(argv=tuple(argv), env=env, port=0, health_path="/health", tool="dynamo")

    def router(self, ctx: RouterContext) -> ServerSpec:
        argv = ["python3", "-m", "dynamo.frontend", "--http-host", ctx.host, "--http-port", "0"]
        env = dynamo_env(ctx.config.infra, ctx.host, str(ctx.discovery_dir or ctx.job_dir / "discovery"))
        env["DYN_SYSTEM_PORT"] = "-1"
        return ServerSpec(argv=tuple(argv), env=env, port=0, health_path="/health", tool="dynamo")


BACKEND = DynamoMockerBackend()
