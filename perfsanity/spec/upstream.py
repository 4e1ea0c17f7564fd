"""TensorRT-LLM's own perf-sanity files, read as they are upstream.

Contract (pure functions on plain data, no I/O except :func:`config_folders`/:func:`is_trtllm_tree`):

* **Placeholders.** A string of the form ``<...>`` (``<partition>``, ``<model_path>``,
  ``<full_path_to_work_dir>``, ...) means "not set". :func:`strip_placeholders` removes every such value
  from a raw config and returns where they were, so cluster defaults, L0 inputs and ``--set`` fill
  them like any absent key. :func:`placeholder_error` is the one error for a placeholder still unset
  where a value is needed: it names the file, the key and the two ways to set it.
* **Aggregated format.** Upstream's ``aggregated/<cfg>.yaml`` holds ``server_configs: [{name, <engine
  keys>, client_configs: [{concurrency, iterations, isl, osl, ...}]}]``. Each server is one test case;
  :func:`aggregated_case` turns one into our aggregated config (``worker_config.server`` = the server's
  engine keys, ``benchmark`` from its client list: concurrencies, ``iterations`` → ``multi_round``,
  which is upstream's meaning too: requests = concurrency × iterations). Its name is
  ``<cfg>-<server>``, so its id is upstream's ``aggr_upload-<cfg>-<server>``.
* **ctx_only.** ``aggr_upload-ctx_only-<cfg>`` runs a *disaggregated* config's context worker alone as
  an aggregated server (upstream: output length 1, no dataset, no cache transceiver, overlap scheduler
  off). :func:`ctx_only_case` builds it, named ``ctx_only-<cfg>``.
* **Where upstream keeps configs.** ``<llm-src>/tests/scripts/perf-sanity/{aggregated,disaggregated}``,
  overridden by ``$AGG_CONFIG_FOLDER`` / ``$DISAGG_CONFIG_FOLDER`` (a relative value is joined to the
  llm-src root), see :func:`config_folders`.
* **Compatibility keys.** ``environment.client_env_var`` is upstream's name of our
  ``benchmark_env_var``; ``slurm.job_time: 02:00:00`` unquoted stays the string it looks like
  (:func:`perfsanity.spec.loader.read_yaml` reads no YAML 1.1 base-60 numbers).

Every error is a :class:`~perfsanity.common.errors.ConfigError` naming the file and key.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from perfsanity.common.errors import ConfigError

PLACEHOLDER_RE = re.compile(r"^<[^<>\n]+>\Z")
AGG_FOLDER_ENV = "AGG_CONFIG_FOLDER"
DISAGG_FOLDER_ENV = "DISAGG_CONFIG_FOLDER"
AGG_FOLDER_DEFAULT = "tests/scripts/perf-sanity/aggregated"
DISAGG_FOLDER_DEFAULT = "tests/scripts/perf-sanity/disaggregated"

#: keys of a ``server_configs`` entry that are not engine (LLM API) options
SERVER_HARNESS_KEYS = ("name", "client_configs", "server_env_var", "model_name")
#: keys of a ``client_configs`` entry the harness maps; the rest are accepted and not used
CLIENT_KEYS = ("name", "concurrency", "iterations", "isl", "osl", "backend", "dataset_file", "streaming",
               "random_range_ratio", "use_chat_template", "use_nv_sa_benchmark", "client_env_var",
               "accuracy_config", "only_run_accuracy")
#: cluster-file and command-line hints per key: what to write to set it
SET_HINTS = {
    "environment.model_path": "model_root (with metadata.model_dir_name) or defaults.environment.model_path",
    "environment.container_image": "defaults.slurm.container_image",
    "environment.container_mount": "defaults.slurm.container_mounts",
}


def is_placeholder(value: Any) -> bool:
    return isinstance(value, str) and bool(PLACEHOLDER_RE.match(value.strip()))


def strip_placeholders(raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """A deep copy of ``raw`` without ``<...>`` values, and ``{dotted key: placeholder}`` of those removed.

    Only mapping values are removed (a placeholder inside a list stays; upstream has none there).
    """
    found: dict[str, str] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, Mapping):
            out = {}
            for key, value in node.items():
                sub = f"{path}.{key}" if path else str(key)
                if is_placeholder(value):
                    found[sub] = value.strip()
                    continue
                out[key] = walk(value, sub)
            return out
        if isinstance(node, list):
            return [walk(v, path) for v in node]
        return node

    return walk(raw, ""), found


def placeholder_error(source: str | None, key: str, placeholder: str) -> ConfigError:
    hint = SET_HINTS.get(key, f"defaults.{key}")
    return ConfigError(
        source, key,
        f"is the placeholder {placeholder!r} and nothing set it; set it in a cluster defaults file "
        f"(--cluster FILE: {hint}) or on the command line (--set {key}=VALUE)",
    )


def normalize(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Upstream compatibility spellings → ours (``environment.client_env_var`` → ``benchmark_env_var``)."""
    out = dict(raw)
    env = out.get("environment")
    if isinstance(env, Mapping) and "client_env_var" in env:
        env = dict(env)
        client = env.pop("client_env_var")
        own = env.get("benchmark_env_var")
        if isinstance(client, str) and (own is None or isinstance(own, str)):
            env["benchmark_env_var"] = f"{own or ''} {client}".strip()
        elif own is None:
            env["benchmark_env_var"] = client
        out["environment"] = env
    return out


def is_aggregated(raw: Mapping[str, Any]) -> bool:
    """Upstream's aggregated format (``server_configs``)."""
    return "server_configs" in raw


def server_names(raw: Mapping[str, Any]) -> list[str]:
    servers = raw.get("server_configs")
    if not isinstance(servers, list):
        return []
    return [str(s.get("name")) for s in servers if isinstance(s, Mapping) and s.get("name") is not None]


def _server(raw: Mapping[str, Any], server: str | None, source: str | None) -> tuple[int, Mapping[str, Any]]:
    servers = raw.get("server_configs")
    if not isinstance(servers, list) or not servers:
        raise ConfigError(source, "server_configs", "must be a non-empty list of servers")
    for i, entry in enumerate(servers):
        if not isinstance(entry, Mapping):
            raise ConfigError(source, f"server_configs[{i}]", f"must be a mapping, got {type(entry).__name__}")
        if "name" not in entry:
            raise ConfigError(source, f"server_configs[{i}].name", "is required but missing")
    names = server_names(raw)
    if server is None:
        if len(servers) == 1:
            return 0, servers[0]
        raise ConfigError(source, "server_configs",
                          f"has {len(servers)} servers ({', '.join(names)}); pick one with --server NAME "
                          "(direct mode) or the test id aggr_upload-<config>-<server> (L0)")
    for i, entry in enumerate(servers):
        if str(entry["name"]) == server:
            return i, entry
    raise ConfigError(source, "server_configs", f"has no server named {server!r}; servers: {', '.join(names)}")


def _client_benchmark(clients: Any, key: str, source: str | None) -> dict[str, Any]:
    """``client_configs`` of one server → our ``benchmark`` section (one list of concurrencies)."""
    if not isinstance(clients, list) or not clients:
        raise ConfigError(source, key, "must be a non-empty list of clients")
    shared: dict[str, Any] = {}
    concurrencies: list[Any] = []
    for i, client in enumerate(clients):
        where = f"{key}[{i}]"
        if not isinstance(client, Mapping):
            raise ConfigError(source, where, f"must be a mapping, got {type(client).__name__}")
        unknown = [k for k in client if k not in CLIENT_KEYS]
        if unknown:
            raise ConfigError(source, f"{where}.{unknown[0]}", f"unknown key; allowed keys: {', '.join(CLIENT_KEYS)}")
        if "concurrency" not in client:
            raise ConfigError(source, f"{where}.concurrency", "is required but missing")
        concurrencies.append(client["concurrency"])
        for ours, theirs in (("multi_round", "iterations"), ("input_length", "isl"), ("output_length", "osl"),
                             ("dataset_file", "dataset_file"), ("streaming", "streaming")):
            if theirs not in client:
                continue
            value = client[theirs]
            if ours in shared and shared[ours] != value:
                raise ConfigError(source, f"{where}.{theirs}",
                                  f"is {value!r} but an earlier client of this server has {shared[ours]!r}; "
                                  "one server's clients must share iterations, isl, osl and dataset "
                                  "(only concurrency may differ)")
            shared[ours] = value
    return {**shared, "concurrency_list": concurrencies}


def aggregated_case(raw: Mapping[str, Any], server: str | None, *, config: str,
                    source: str | None) -> tuple[str, dict[str, Any]]:
    """(test-case name, our aggregated raw config) for one ``server_configs`` entry of an upstream file."""
    index, entry = _server(raw, server, source)
    key = f"server_configs[{index}]"
    out: dict[str, Any] = {k: copy.deepcopy(v) for k, v in raw.items() if k != "server_configs"}
    meta = dict(out.get("metadata") or {})
    if "model_name" not in meta and entry.get("model_name"):
        meta["model_name"] = entry["model_name"]
    out["metadata"] = meta
    hw = dict(out.get("hardware") or {})
    hw.setdefault("num_servers", 1)
    out["hardware"] = hw
    engine = {k: copy.deepcopy(v) for k, v in entry.items() if k not in SERVER_HARNESS_KEYS}
    world = engine.pop("world_size", None)
    if world is not None:
        tp = engine.get("tensor_parallel_size", 1)
        pp = engine.get("pipeline_parallel_size", 1)
        cp = engine.get("context_parallel_size", 1)
        if isinstance(tp, int) and isinstance(pp, int) and isinstance(cp, int) and world != tp * pp * cp:
            raise ConfigError(source, f"{key}.world_size",
                              f"bad value {world!r}: must equal tensor×pipeline×context = {tp * pp * cp}")
    out["worker_config"] = {"server": engine}
    env = dict(out.get("environment") or {})
    if entry.get("server_env_var"):
        env["worker_env_var"] = f"{env.get('worker_env_var') or ''} {entry['server_env_var']}".strip()
    if env:
        out["environment"] = env
    bench = dict(out.get("benchmark") or {})
    bench.update(_client_benchmark(entry.get("client_configs"), f"{key}.client_configs", source))
    out["benchmark"] = bench
    name = f"{config}-{entry['name']}"
    return name, out


def ctx_only_case(raw: Mapping[str, Any], *, config: str, source: str | None) -> tuple[str, dict[str, Any]]:
    """(test-case name, our aggregated raw config) running a disaggregated config's ctx worker alone."""
    wc = raw.get("worker_config")
    ctx = wc.get("ctx") if isinstance(wc, Mapping) else None
    if not isinstance(ctx, Mapping) or not ctx:
        raise ConfigError(source, "worker_config.ctx", "is required for a ctx_only test (it is the server)")
    out: dict[str, Any] = {k: copy.deepcopy(v) for k, v in raw.items() if k != "worker_config"}
    server = {k: copy.deepcopy(v) for k, v in ctx.items() if k != "cache_transceiver_config"}
    server["disable_overlap_scheduler"] = True
    out["worker_config"] = {"server": server}
    hw = {k: v for k, v in dict(out.get("hardware") or {}).items() if k not in ("num_ctx_servers", "num_gen_servers")}
    hw["num_servers"] = 1
    out["hardware"] = hw
    bench = {k: v for k, v in dict(out.get("benchmark") or {}).items() if k not in ("mode", "dataset_file")}
    bench["output_length"] = 1
    out["benchmark"] = bench
    env = out.get("environment")
    if isinstance(env, Mapping):
        env = dict(env)
        ctx_env = env.pop("ctx_worker_env_var", None)
        env.pop("gen_worker_env_var", None)
        if ctx_env:
            env["worker_env_var"] = f"{env.get('worker_env_var') or ''} {ctx_env}".strip()
        out["environment"] = env
    return f"ctx_only-{config}", out


def config_folders(llm_src: Path, environ: Mapping[str, str] = os.environ) -> tuple[Path, Path]:
    """(aggregated folder, disaggregated folder) of a TensorRT-LLM tree, honouring the env overrides."""
    def folder(var: str, default: str) -> Path:
        value = environ.get(var) or default
        path = Path(value)
        return path if path.is_absolute() else llm_src / path

    return folder(AGG_FOLDER_ENV, AGG_FOLDER_DEFAULT), folder(DISAGG_FOLDER_ENV, DISAGG_FOLDER_DEFAULT)


def is_trtllm_tree(llm_src: Path, environ: Mapping[str, str] = os.environ) -> bool:
    """A TensorRT-LLM checkout: it has upstream's perf-sanity folders (or an override names one)."""
    if environ.get(AGG_FOLDER_ENV) or environ.get(DISAGG_FOLDER_ENV):
        return True
    return any(p.is_dir() for p in config_folders(llm_src, {}))
