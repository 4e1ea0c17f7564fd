"""Dynamo + SGLang backend: ``dynamo.sglang`` prefill/decode workers behind ``dynamo.frontend``.

Both engine sections go into one file, ``engine/sglang_config.yaml``, with top-level keys ``prefill``
(``worker_config.ctx``) and ``decode`` (``worker_config.gen``); keys are SGLang's CLI names with
dashes. What the harness derives (parallelism from its typed keys, multi-node flags) goes on the argv
instead. Worker::

    python3 -m dynamo.sglang --model-path <model> --disagg-config <file> --disagg-config-key prefill|decode \\
        [--nnodes N --node-rank ${SLURM_PROCID}] --dist-init-addr <first host>:<p> --tp-size N [--ep-size ..]

Router: ``python3 -m dynamo.frontend --http-host <host> --http-port 0``. Workers and frontend find
each other through file-based discovery in the job's shared ``discovery_dir`` or, with
``infra.discovery: etcd``, through the job's etcd; planes per ``config.infra``
(:mod:`perfsanity.engines.dynamo_runtime`), the same env as the dynamo-mocker CPU runs.

Facts (ai-dynamo 1.6.1 from PyPI, ``dynamo/sglang/backend_args.py`` and ``dynamo/sglang/args.py``):

* The flags are ``--disagg-config`` and ``--disagg-config-key`` (env ``DYN_SGL_DISAGG_CONFIG[_KEY]``);
  there is no ``--config/--config-key`` in dynamo.sglang. The selected section is dumped to a temporary
  YAML and handed to SGLang's own ``--config`` merger (``ConfigArgumentMerger``), which turns each key
  into ``--<key>`` verbatim, so keys must be spelled as SGLang's flags (dashes). Booleans follow the
  flag's action (store_true: present/absent), lists repeat values, dicts become JSON, and a ``None``
  would become the word "None", so ``None`` values are left out.
* The merger refuses actions other than store_true and single-value ones; in sglang 0.5.23
  ``--enable-dp-attention`` is a ``DeprecatedStoreTrueAction`` ("Unsupported config option
  'enable_dp_attention'"), one more reason the harness-derived flags stay on the argv, where the
  parser accepts it with a deprecation warning (replacement: ``--attn-dp-size``).
* If ``--disaggregation-bootstrap-port`` is not given, dynamo.sglang reserves a free one itself and
  publishes it through discovery, so no bootstrap port is configured here.
* Runtime env (``dynamo/common/configuration/groups/runtime_args.py``): ``DYN_DISCOVERY_BACKEND``
  (kubernetes|etcd|file|mem; file uses the root dir in ``DYN_FILE_KV``), ``DYN_REQUEST_PLANE``
  (tcp|nats), ``DYN_EVENT_PLANE`` (nats|zmq); the advertised hosts are ``DYN_TCP_RPC_HOST``,
  ``DYN_TCP_RESPONSE_STREAM_HOST``, ``DYN_EVENT_PLANE_HOST`` (``dynamo/common/snapshot/constants.py``).
* A worker serves HTTP only on its system status server (``DYN_SYSTEM_HOST``/``DYN_SYSTEM_PORT``,
  ``/health``); dynamo.frontend drops ``DYN_SYSTEM_PORT``. ``DYN_SYSTEM_PORT=0`` gives it an
  OS-assigned port, found among the worker's listening sockets: the Dynamo 1.6.1 runtime that
  ``dynamo.mocker`` shares does so in every CPU e2e run.
"""

from __future__ import annotations

from typing import Any

import yaml

from perfsanity.engines import sglang
from perfsanity.engines.base import BackendBase, RouterContext, ServerSpec, WorkerContext, cli_flags
from perfsanity.engines.dynamo_runtime import FrontendDiscovery, runtime_env
from perfsanity.spec.config import Config

CONFIG_FILE = "engine/sglang_config.yaml"
SECTIONS = {"ctx": "prefill", "gen": "decode"}
#: the sglang release ai-dynamo 1.6.1 pins (``sglang[diffusion]==0.5.21``): the default for key checks
PINNED_SGLANG = "0.5.21"


def role_options(config: Config, kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(parallelism arguments for the argv, SGLang-native keys for the file) of one role."""
    return sglang.split_generated(sglang.sglang_options(sglang.worker_section(config, kind), f"worker_config.{kind}"))


def section_options(config: Config, kind: str) -> dict[str, Any]:
    """One section of sglang_config.yaml: the config's SGLang-native keys with dashes, ``None`` dropped."""
    _, options = role_options(config, kind)
    options["disaggregation_mode"] = SECTIONS[kind]
    return {key.replace("_", "-"): value for key, value in options.items() if value is not None}


def render_config(config: Config) -> str:
    data = {
        SECTIONS[kind]: section_options(config, kind)
        for kind in ("ctx", "gen")
        if getattr(config.worker_config, kind) is not None
    }
    return yaml.safe_dump(data, default_flow_style=False, sort_keys=False)


def discovery_env(config: Config, host: str, discovery_dir: object) -> dict[str, str]:
    if config.infra.discovery == "file" and discovery_dir is None:
        raise ValueError(f"{config.name}: backend dynamo-sglang needs a shared discovery_dir")
    return runtime_env(config.infra, host, str(discovery_dir))


def require_disagg(config: Config) -> None:
    sglang.require_e2e(config, "dynamo-sglang")
    if config.kind != "disagg":
        raise ValueError(f"{config.name}: backend dynamo-sglang runs disaggregated configs only "
                         "(an aggregated dynamo worker has no HTTP endpoint without a frontend)")


class DynamoSglangBackend(FrontendDiscovery, BackendBase):
    name = "dynamo-sglang"
    #: the frontend discovers workers through the shared discovery dir: it starts with them
    router_needs_worker_addresses = False
    #: etcd / NATS / several frontends behind nginx per ``config.infra`` and ``config.frontend``
    uses_job_infra = True

    def validate(self, config: Config, source: str | None) -> None:
        """The section keys go through SGLang's config merger as ``--<key>`` flags: the same check as sglang,
        against the sglang release Dynamo pins (``metadata.engine_version`` names an sglang release)."""
        sglang.check_engine_keys(config, source, default_release=PINNED_SGLANG, engine="dynamo-sglang")

    def worker(self, ctx: WorkerContext) -> ServerSpec:
        config, placement = ctx.config, ctx.placement
        require_disagg(config)
        if placement.kind not in SECTIONS:
            raise ValueError(f"{config.name}: no dynamo.sglang worker for a {placement.kind!r} role")
        prefix, env = sglang.profiling(config, placement.role, ctx.job_dir)
        env = {
            **discovery_env(config, ctx.host, ctx.discovery_dir),
            "DYN_SYSTEM_HOST": ctx.host,
            "DYN_SYSTEM_PORT": "0",
            **env,
        }
        argv = [
            *prefix,
            "python3", "-m", "dynamo.sglang",
            "--model-path", ctx.model_path,
            "--disagg-config", str(ctx.job_dir / CONFIG_FILE),
            "--disagg-config-key", SECTIONS[placement.kind],
            *sglang.dist_init_flags(ctx),
            *cli_flags(role_options(config, placement.kind)[0]),
        ]
        return ServerSpec(
            argv=tuple(argv),
            env=env,
            files={CONFIG_FILE: render_config(config)},
            port=0,
            health_path="/health",
            # dynamo.sglang reserves and publishes its own bootstrap port (module doc)
            node_ports=sglang.node_ports({}, placement.kind, bootstrap=False),
        )

    def router(self, ctx: RouterContext) -> ServerSpec:
        config = ctx.config
        require_disagg(config)
        argv = ("python3", "-m", "dynamo.frontend", "--http-host", ctx.host, "--http-port", "0")
        return ServerSpec(argv=argv, env=discovery_env(config, ctx.host, ctx.discovery_dir), port=0,
                          health_path="/health")


BACKEND = DynamoSglangBackend()
