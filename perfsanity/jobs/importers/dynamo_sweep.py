"""``perfsanity import dynamo-sweep FILE``: a sweep file of Dynamo's SGLang SLURM jobs → one perfsanity
test config carrying a ``sweep:`` block (it is its own base, docs/sweeps.md).

The source (facts and their sources: ``FACTS.md``)::

    slurm:                      # any of these, each a list of values (a scalar is one value)
      prefill_nodes: [1, 2]     # disaggregated: prefill_nodes/decode_nodes/prefill_workers/decode_workers
      decode_nodes: [4]
      prefill_workers: [1]
      decode_workers: [4]       # aggregated instead: agg_nodes, agg_workers
    sglang:                     # dynamo.sglang flags, each a list of values, applied to prefill AND decode
      mem-fraction-static: [0.82, 0.85]

Its jobs are the cartesian product of all lists (the ``slurm`` combinations outside, the ``sglang`` ones
inside). The importer expands that product itself and writes the points as a ``mode: zip`` sweep, so
each point carries what it derives: GPUs per worker = nodes × gpus_per_node / workers, which becomes
the workers' ``tensor_parallel_size``. Values that vary from point to point are sweep parameters; the
others are in the config itself. GPUs per node and the model are not in the source (Dynamo takes them
on its command line): ``--gpus-per-node`` (default 8, as Dynamo's), ``--model-name``, ``--model-path``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from perfsanity.common.errors import ConfigError
from perfsanity.engines.dynamo_sglang import PINNED_SGLANG
from perfsanity.jobs.importers import (
    Imported,
    Unmapped,
    map_sglang_flags,
    out_path,
    positive_int,
    safe_name,
    sglang_options,
)
from perfsanity.jobs.sweep import MAX_POINTS
from perfsanity.spec.loader import read_yaml

TOOL = "dynamo-sweep"
SECTIONS = ("slurm", "sglang")
DISAGG_KEYS = ("prefill_nodes", "decode_nodes", "prefill_workers", "decode_workers")
AGG_KEYS = ("agg_nodes", "agg_workers")
#: submit_job_script.py's ``--gpus-per-node`` default (not a sweep parameter)
DEFAULT_GPUS_PER_NODE = 8


def _lists(section: Mapping[str, Any]) -> dict[str, list[Any]]:
    return {k: (list(v) if isinstance(v, list) else [v]) for k, v in section.items()}


def _product(params: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(params)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(params[k] for k in keys))]


def import_dynamo_sweep(path: Path | str, out: str | None = None, *, gpus_per_node: int = DEFAULT_GPUS_PER_NODE,
                        model_name: str | None = None, model_path: str | None = None) -> Imported:
    """Build the perfsanity sweep config of one Dynamo sweep file (nothing is written)."""
    src = Path(path)
    raw = read_yaml(src)
    if not raw:
        raise ConfigError(str(src), "", "empty sweep file: expected 'slurm:' and/or 'sglang:'")
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(str(src), str(key), "unknown section: a Dynamo sweep file has only slurm and sglang")
    sections: dict[str, dict[str, list[Any]]] = {}
    for name in SECTIONS:
        value = raw.get(name) or {}
        if not isinstance(value, Mapping):
            raise ConfigError(str(src), name, f"must be a mapping of parameter: [values], got {type(value).__name__}")
        sections[name] = _lists(value)
        for key, values in sections[name].items():
            if not values:
                raise ConfigError(str(src), f"{name}.{key}", "has no values")
    unmapped: list[Unmapped] = []
    slurm = sections["slurm"]
    for key in list(slurm):
        if key not in DISAGG_KEYS + AGG_KEYS:
            unmapped.append(Unmapped(f"slurm.{key}", "not a sweep parameter of Dynamo's job script"))
            if len(slurm[key]) > 1:
                raise ConfigError(str(src), f"slurm.{key}", "has several values but does not map: the points would "
                                                              "collapse; remove it")
            del slurm[key]
    agg = any(k in slurm for k in AGG_KEYS)
    disagg = any(k in slurm for k in ("prefill_nodes", "decode_nodes"))
    if agg and any(k in slurm for k in DISAGG_KEYS):
        raise ConfigError(str(src), "slurm.agg_nodes", "is set next to prefill/decode keys; use one mode")
    if not agg and not disagg:
        raise ConfigError(str(src), "slurm", "needs prefill_nodes/decode_nodes (disaggregated) or agg_nodes")
    for key in AGG_KEYS if agg else DISAGG_KEYS:  # Dynamo's job script requires each of its mode's keys
        if key not in slurm:
            mode = "aggregated" if agg else "disaggregated"
            raise ConfigError(str(src), f"slurm.{key}", f"is required in {mode} mode (Dynamo's job script needs "
                                                        f"{', '.join(AGG_KEYS if agg else DISAGG_KEYS)})")
    gpn = positive_int(gpus_per_node, src, "--gpus-per-node")

    release = PINNED_SGLANG
    flags = map_sglang_flags(sections["sglang"], "sglang", sglang_options(release), release, unmapped, source=src)
    for u in unmapped:
        if u.path.startswith("sglang.") and len(sections["sglang"][u.path[len("sglang."):]]) > 1:
            raise ConfigError(str(src), u.path, f"has several values but does not map ({u.reason}): the points "
                                                "would collapse; remove it")
    for key in ("tensor_parallel_size", "pipeline_parallel_size"):
        if key in flags:
            raise ConfigError(str(src), "sglang", f"sets {key}: the workers' parallelism comes from the slurm "
                                                  "section (GPUs per worker), so it is not swept here")

    total = 1
    for values in [*slurm.values(), *flags.values()]:
        total *= len(values)
    if total > MAX_POINTS:
        raise ConfigError(str(src), "", f"{total} points (more than {MAX_POINTS})")
    roles = (("agg", "server"),) if agg else (("prefill", "ctx"), ("decode", "gen"))
    points: list[dict[str, Any]] = []
    for sl in _product(slurm):  # Dynamo's order: slurm combinations outside, sglang ones inside
        hw: dict[str, Any] = {}
        for role, section in roles:
            nodes = positive_int(sl[f"{role}_nodes"], src, f"slurm.{role}_nodes")
            workers = positive_int(sl[f"{role}_workers"], src, f"slurm.{role}_workers")
            if nodes % workers:  # Dynamo's own rule (submit_job_script.py)
                raise ConfigError(str(src), f"slurm.{role}_nodes", f"{nodes} nodes are not divisible by "
                                                                   f"{role}_workers {workers}")
            count_key = {"ctx": "num_ctx_servers", "gen": "num_gen_servers", "server": "num_servers"}[section]
            hw[f"hardware.{count_key}"] = workers
            hw[f"worker_config.{section}.tensor_parallel_size"] = nodes * gpn // workers
        for sg in _product(flags):
            points.append({**hw, **{f"worker_config.*.{k}": v for k, v in sg.items()}})

    keys = list(points[0])
    varying = [k for k in keys if any(p[k] != points[0][k] for p in points)] or keys[:1]
    base_workers: dict[str, dict[str, Any]] = {section: {} for _, section in roles}
    hardware: dict[str, Any] = {"gpus_per_node": gpn}
    for key, value in points[0].items():
        parts = key.split(".")
        if parts[0] == "hardware":
            hardware[parts[1]] = value
        elif parts[1] == "*":
            for section in base_workers:
                base_workers[section][parts[2]] = value
        else:
            base_workers[parts[1]][parts[2]] = value
    stem = safe_name(src.stem)
    metadata: dict[str, Any] = {"model_name": model_name or stem, "backend": "dynamo-sglang"}
    data: dict[str, Any] = {"metadata": metadata, "hardware": hardware}
    if model_path:
        data["environment"] = {"model_path": model_path}
    data["worker_config"] = base_workers
    data["sweep"] = {"mode": "zip", "parameters": {k: [p[k] for p in points] for k in varying}}
    kind = "aggr" if agg else "disagg"
    result = Imported(src, out_path(out, stem, kind), data, unmapped, points=len(points))
    shape = " × ".join(str(len(v)) for v in [*slurm.values(), *flags.values()])
    result.summary.append(f"sweep: {len(points)} points ({shape}, the source's cartesian product), "
                          f"{len(varying)} swept key(s); {gpn} GPUs per node")
    return result
