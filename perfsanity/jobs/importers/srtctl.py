"""``perfsanity import srtctl FILE``: an srtctl job YAML (NVIDIA/srt-slurm) → one perfsanity test config.

What maps (facts and their sources: ``FACTS.md``)::

    name                              → the output file's stem (perfsanity's config name)
    model.path / .container / .precision
                                      → environment.model_path / slurm.container_image / metadata.precision
    resources.gpu_type, gpus_per_node → hardware.gpu_type, metadata.supported_gpus, hardware.gpus_per_node
    resources.{prefill,decode,agg}_workers
                                      → hardware.num_ctx_servers / num_gen_servers / num_servers
    resources.*_nodes, gpus_per_*     → GPUs per worker = nodes × gpus_per_node / workers, which must be
                                        tensor × pipeline parallel size of the worker's SGLang flags
    slurm.time_limit/account/partition→ slurm.job_time / account / partition
    frontend.type                     → dynamo (default): backend dynamo-sglang, frontend.count/nginx from
                                        enable_multiple_frontends/num_additional_frontends; sglang: backend sglang
    backend.sglang_config.prefill/decode/aggregated
                                      → worker_config.ctx / gen / server (flag names → keys)
    backend.{prefill,decode,aggregated}_environment
                                      → environment.ctx_worker_env_var / gen_worker_env_var / worker_env_var
    benchmark.isl/osl/concurrencies   → benchmark.input_length / output_length / concurrency_list

Everything else is listed as not mapped. The topology of the result (workers per role, GPUs, nodes)
is checked against the source's before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from perfsanity.common.errors import ConfigError
from perfsanity.engines.dynamo_sglang import PINNED_SGLANG
from perfsanity.engines.facts import load as load_facts
from perfsanity.jobs.importers import (
    Imported,
    Unmapped,
    map_sglang_flags,
    out_path,
    positive_int,
    safe_name,
    sglang_options,
    unmapped_keys,
)
from perfsanity.spec.config import config_from_dict
from perfsanity.spec.loader import read_yaml
from perfsanity.spec.topology import build_topology

TOOL = "srtctl"
#: srtctl's default ``resources.gpus_per_node`` (docs/config-reference.md, resources table)
DEFAULT_GPUS_PER_NODE = 4
#: srtctl's frontend defaults: enable_multiple_frontends true, num_additional_frontends 9
DEFAULT_MULTIPLE_FRONTENDS = True
DEFAULT_ADDITIONAL_FRONTENDS = 9
#: srtctl benchmark types with a perfsanity client that sends the same closed-loop load
CLIENTS = {"sa-bench": "aiperf", "aiperf": "aiperf", "sglang-bench": "sglang-bench-serving"}
ROLES = (("prefill", "ctx"), ("decode", "gen"))
_RESOURCE_KEYS = ("gpu_type", "gpus_per_node", "prefill_nodes", "decode_nodes", "prefill_workers",
                  "decode_workers", "agg_nodes", "agg_workers", "gpus_per_prefill", "gpus_per_decode",
                  "gpus_per_agg")
MAPPED: dict[str, Any] = {
    "name": True,
    "model": {"path": True, "container": True, "precision": True},
    "resources": dict.fromkeys(_RESOURCE_KEYS, True),
    "slurm": {"time_limit": True, "account": True, "partition": True},
    "frontend": {"type": True, "enable_multiple_frontends": True, "num_additional_frontends": True},
    "backend": {"type": True, "sglang_config": True, "prefill_environment": True, "decode_environment": True,
                "aggregated_environment": True},
    "benchmark": {"type": True, "isl": True, "osl": True, "concurrencies": True, "req_rate": True},
}


def _section(raw: Mapping[str, Any], key: str, src: Path) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(str(src), key, f"must be a mapping, got {type(value).__name__}")
    return dict(value)


def _text(section: Mapping[str, Any], key: str, where: str, src: Path) -> str | None:
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, (str, int, float)) or isinstance(value, bool) or str(value).strip() == "":
        path = f"{where}.{key}" if where else key
        raise ConfigError(str(src), path, f"bad value {value!r}: must be a non-empty string")
    return str(value)


def _concurrencies(value: Any, src: Path) -> list[int]:
    items = value.split("x") if isinstance(value, str) else value if isinstance(value, list) else [value]
    out = []
    for item in items:
        try:
            n = int(str(item).strip()) if not isinstance(item, bool) else 0
        except ValueError:
            n = 0
        if n < 1:
            raise ConfigError(str(src), "benchmark.concurrencies",
                              f"bad value {value!r}: must be positive integers, a list or 'NxM'")
        out.append(n)
    return out


def _gpus_per_worker(res: Mapping[str, Any], role: str, gpn: int, src: Path) -> tuple[int, int]:
    """(workers, GPUs per worker) of a role from ``resources``."""
    workers_key, nodes_key, explicit_key = f"{role}_workers", f"{role}_nodes", f"gpus_per_{role}"
    if res.get(workers_key) is None:
        raise ConfigError(str(src), f"resources.{workers_key}", "is required (the number of workers)")
    workers = positive_int(res[workers_key], src, f"resources.{workers_key}")
    if res.get(explicit_key) is not None:
        return workers, positive_int(res[explicit_key], src, f"resources.{explicit_key}")
    if res.get(nodes_key) is None:
        raise ConfigError(str(src), f"resources.{nodes_key}", f"is required (or set resources.{explicit_key})")
    nodes = positive_int(res[nodes_key], src, f"resources.{nodes_key}", allow_zero=True)
    if nodes == 0:
        raise ConfigError(str(src), f"resources.{nodes_key}", f"0 ({role} workers on the other role's nodes) is "
                          f"not imported: set resources.{explicit_key}; perfsanity packs small servers itself")
    if (nodes * gpn) % workers:
        raise ConfigError(str(src), f"resources.{workers_key}", f"{nodes} node(s) × {gpn} GPUs do not split evenly "
                          f"into {workers} workers")
    return workers, nodes * gpn // workers


def _parallelism(worker: dict[str, Any], gpus: int, where: str, src: Path) -> None:
    """Set tensor_parallel_size from the worker's GPUs, or check that the flags give that many."""
    pp = worker.get("pipeline_parallel_size", 1)
    tp = worker.get("tensor_parallel_size")
    if tp is None:
        if isinstance(pp, bool) or not isinstance(pp, int) or pp < 1 or gpus % pp:
            raise ConfigError(str(src), f"{where}.pipeline-parallel-size", f"bad value {pp!r} for {gpus} GPUs per worker")
        worker["tensor_parallel_size"] = gpus // pp
        return
    if isinstance(tp, bool) or not isinstance(tp, int) or not isinstance(pp, int) or tp * pp != gpus:
        raise ConfigError(str(src), f"{where}.tensor-parallel-size", f"tensor {tp!r} × pipeline {pp!r} parallel size "
                          f"is not the {gpus} GPUs per worker that resources give")


def import_srtctl(path: Path | str, out: str | None = None) -> Imported:
    """Build the perfsanity config of one srtctl job file (nothing is written)."""
    src = Path(path)
    raw = read_yaml(src)
    name = _text(raw, "name", "", src) if "name" in raw else None
    if name is None:
        raise ConfigError(str(src), "name", "is required (srtctl's job name)")
    model = _section(raw, "model", src)
    res = _section(raw, "resources", src)
    slurm_in = _section(raw, "slurm", src)
    front = _section(raw, "frontend", src)
    backend = _section(raw, "backend", src)
    bench = _section(raw, "benchmark", src)
    unmapped: list[Unmapped] = []

    btype = backend.get("type", "sglang")
    if btype != "sglang":
        raise ConfigError(str(src), "backend.type", f"{btype!r} is not imported; only sglang jobs are")
    ftype = front.get("type", "dynamo")
    if ftype not in ("dynamo", "sglang"):
        raise ConfigError(str(src), "frontend.type", f"{ftype!r} is not imported; dynamo (default) or sglang")
    engine = "dynamo-sglang" if ftype == "dynamo" else "sglang"
    release = PINNED_SGLANG if engine == "dynamo-sglang" else load_facts("sglang")["default_release"]
    options = sglang_options(release)

    agg = res.get("agg_nodes") is not None or res.get("agg_workers") is not None
    disagg = any(res.get(k) is not None for k in ("prefill_nodes", "decode_nodes", "prefill_workers", "decode_workers"))
    if agg and disagg:
        raise ConfigError(str(src), "resources.agg_nodes", "is set next to prefill/decode keys; use one mode")
    if not agg and not disagg:
        raise ConfigError(str(src), "resources", "needs prefill_nodes/decode_nodes (disaggregated) or agg_nodes")
    kind = "aggr" if agg else "disagg"
    gpn = positive_int(res.get("gpus_per_node", DEFAULT_GPUS_PER_NODE), src, "resources.gpus_per_node")

    sg = backend.get("sglang_config") or {}
    if not isinstance(sg, Mapping):
        raise ConfigError(str(src), "backend.sglang_config", "must be a mapping with prefill/decode (or aggregated)")
    roles = (("agg", "aggregated", "server"),) if agg else tuple((r, r, k) for r, k in ROLES)
    for key in sg:
        if key not in {mode for _, mode, _ in roles}:
            unmapped.append(Unmapped(f"backend.sglang_config.{key}", f"not used by a {kind} job"))
    workers: dict[str, dict[str, Any]] = {}
    hardware: dict[str, Any] = {"gpus_per_node": gpn}
    counts: dict[str, tuple[int, int]] = {}
    for role, mode, section in roles:
        n, gpus = _gpus_per_worker(res, role, gpn, src)
        where = f"backend.sglang_config.{mode}"
        worker = map_sglang_flags(sg.get(mode), where, options, release, unmapped, source=src)
        _parallelism(worker, gpus, where, src)
        workers[section] = worker
        counts[section] = (n, gpus)
        hardware[{"ctx": "num_ctx_servers", "gen": "num_gen_servers", "server": "num_servers"}[section]] = n
    gpu_type = _text(res, "gpu_type", "resources", src)
    if gpu_type:
        hardware["gpu_type"] = gpu_type.upper()

    served = next((w["served_model_name"] for w in workers.values() if w.get("served_model_name")), None)
    model_path = _text(model, "path", "model", src)
    metadata: dict[str, Any] = {"model_name": str(served or (Path(model_path).name if model_path else name)),
                                "backend": engine}
    if _text(model, "precision", "model", src):
        metadata["precision"] = str(model["precision"])
    if gpu_type:
        metadata["supported_gpus"] = [gpu_type.upper()]
    environment: dict[str, Any] = {}
    if model_path and model_path.startswith("/"):
        environment["model_path"] = model_path
    elif model_path:
        unmapped.append(Unmapped("model.path", "an srtslurm.yaml alias: set environment.model_path (or the "
                                               "cluster defaults) to the model's directory"))
    for role, env_key in (("prefill", "ctx_worker_env_var"), ("decode", "gen_worker_env_var"),
                          ("aggregated", "worker_env_var")):
        env = backend.get(f"{role}_environment")
        if not env:
            continue
        if not isinstance(env, Mapping):
            raise ConfigError(str(src), f"backend.{role}_environment", "must be a mapping of NAME: value")
        if (role == "aggregated") != agg:
            unmapped.append(Unmapped(f"backend.{role}_environment", f"not used by a {kind} job"))
            continue
        environment[env_key] = {str(k): str(v) for k, v in env.items()}

    slurm: dict[str, Any] = {"job_name": safe_name(name)}
    if _text(slurm_in, "time_limit", "slurm", src):
        slurm["job_time"] = str(slurm_in["time_limit"])
    for key in ("account", "partition"):
        if _text(slurm_in, key, "slurm", src):
            slurm[key] = str(slurm_in[key])
    container = _text(model, "container", "model", src)
    if container and ("/" in container or container.endswith(".sqsh")):
        slurm["container_image"] = container
    elif container:
        unmapped.append(Unmapped("model.container", "an srtslurm.yaml alias: set slurm.container_image"))

    data: dict[str, Any] = {"metadata": metadata, "slurm": slurm, "hardware": hardware}
    if environment:
        data["environment"] = environment
    data["benchmark"] = _benchmark(bench, src, unmapped)
    data["worker_config"] = workers
    if engine == "dynamo-sglang":
        many = front.get("enable_multiple_frontends", DEFAULT_MULTIPLE_FRONTENDS)
        extra = front.get("num_additional_frontends", DEFAULT_ADDITIONAL_FRONTENDS) if many else 0
        count = 1 + positive_int(extra, src, "frontend.num_additional_frontends", allow_zero=True)
        data["frontend"] = {"count": count, "nginx": count > 1}
    else:
        for key in ("enable_multiple_frontends", "num_additional_frontends"):
            if key in front:
                unmapped.append(Unmapped(f"frontend.{key}", "SGLang's router is one process"))

    unmapped = unmapped_keys(raw, MAPPED) + unmapped
    name = safe_name(name)
    result = Imported(src, out_path(out, name, kind), data, unmapped)
    _check_topology(result, counts, res, gpn, agg)
    return result


def _benchmark(bench: Mapping[str, Any], src: Path, unmapped: list[Unmapped]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    btype = bench.get("type", "manual")
    if btype not in CLIENTS:
        given = "" if "type" in bench else " (srtctl's default)"
        unmapped.append(Unmapped("benchmark.type", f"{btype!r}{given} has no perfsanity equivalent; the config "
                                                   "runs the default concurrency benchmark"))
    else:
        out["client"] = CLIENTS[btype]
    for key, target in (("isl", "input_length"), ("osl", "output_length")):
        if bench.get(key) is not None:
            out[target] = positive_int(bench[key], src, f"benchmark.{key}")
    if bench.get("concurrencies") is not None:
        out["concurrency_list"] = _concurrencies(bench["concurrencies"], src)
    rate = bench.get("req_rate")
    if rate is not None and str(rate) != "inf":
        unmapped.append(Unmapped("benchmark.req_rate", f"{rate!r}: the imported config sends closed-loop load "
                                                       "(as req_rate: inf)"))
    return out


def _check_topology(result: Imported, counts: Mapping[str, tuple[int, int]], res: Mapping[str, Any], gpn: int,
                    agg: bool) -> None:
    """The result's workers, GPUs and nodes equal the source's; adds the summary line."""
    config = config_from_dict(result.data, name=result.out.stem, kind="aggr" if agg else "disagg",
                              source=str(result.source))
    topo = build_topology(config)
    src_gpus = sum(n * g for n, g in counts.values())
    explicit = any(res.get(f"gpus_per_{r}") is not None for r in ("prefill", "decode", "agg"))
    node_keys = ("agg_nodes",) if agg else ("prefill_nodes", "decode_nodes")
    src_nodes = sum(int(res.get(k) or 0) for k in node_keys)
    got = {kind: len(topo.of_kind(kind)) for kind in counts}
    want = {kind: n for kind, (n, _) in counts.items()}
    if got != want or topo.total_gpus != src_gpus or (not explicit and topo.total_nodes != src_nodes):
        raise ConfigError(str(result.source), "resources", f"the imported topology ({topo.total_nodes} nodes, "
                          f"{topo.total_gpus} GPUs, workers {got}) differs from the source's ({src_nodes} nodes, "
                          f"{src_gpus} GPUs, workers {want})")
    parts = [f"{n} {'prefill' if k == 'ctx' else 'decode' if k == 'gen' else 'aggregated'} × {g} GPUs"
             for k, (n, g) in counts.items()]
    result.summary.append(f"topology: {' + '.join(parts)} = {topo.total_gpus} GPUs on {topo.total_nodes} nodes "
                          f"({gpn} GPUs per node), as in the source")


