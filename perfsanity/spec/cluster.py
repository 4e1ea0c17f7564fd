"""Cluster defaults: one YAML per cluster with what every test on it shares.

Given with ``--cluster FILE`` or ``$PERFSANITY_CLUSTER``, or by name with L0's ``--cluster-name NAME``
(:func:`find_cluster`: a file ``NAME.yaml`` or one whose ``name:`` is NAME in ``test_configs/clusters``;
a name with no file is not an error, since TensorRT-LLM's Jenkins passes its own cluster names).
Example::

    name: gb200-lab
    gpu_type: GB200
    defaults:                 # any test-config sections; the test YAML overrides them key by key
      slurm: {partition: batch, account: perf, job_time: "02:00:00"}
      hardware: {gpus_per_node: 4}
    env: "UCX_TLS=rc,cuda_ipc NCCL_IB_HCA=mlx5"   # added to every role; the test's own values win
    aliases:
      containers: {trtllm-nightly: "registry.example/trtllm:nightly"}
      models: {DeepSeek-R1-0528-FP4-v2: /lustre/models/DeepSeek-R1-0528-FP4-v2}
    model_root: /lustre/models   # model_path = model_root/metadata.model_dir_name when unset
    bind_host: 127.0.0.1         # optional: address servers bind (default: the node's own address)

Precedence, lowest first: built-in defaults < ``defaults`` here < the test YAML < command-line
overrides. ``env`` is prepended to every role's env string, so a test's own ``K=V`` wins.
Aliases are resolved after merging: a ``container_image`` or ``model_path`` equal to an alias name
is replaced by the alias's value.
"""

from __future__ import annotations

import copy
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from perfsanity.common.errors import ConfigError
from perfsanity.spec.config import ClusterDefaultsLike, read_yaml
from perfsanity.spec.envvars import parse_env_string

ENV_VAR = "PERFSANITY_CLUSTER"
ROLE_ENV_KEYS = ("worker_env_var", "server_env_var", "benchmark_env_var")


class Aliases(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    containers: dict[str, str] = Field(default_factory=dict)
    models: dict[str, str] = Field(default_factory=dict)


class ClusterDefaults(BaseModel, ClusterDefaultsLike):
    """A validated cluster defaults file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "default"
    gpu_type: str | None = None
    defaults: dict[str, dict[str, Any]] = Field(default_factory=dict)
    env: str = ""
    aliases: Aliases = Aliases()
    model_root: str | None = None
    bind_host: str | None = Field(
        default=None, description="address servers bind and advertise (PERFSANITY_HOST); default: the node's"
    )
    source: str | None = None

    def apply(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Merge these defaults under a raw test config (see module doc for precedence)."""
        merged = copy.deepcopy(_merge(self.defaults, raw))  # never modify the caller's mapping
        if self.env:
            env = merged.setdefault("environment", {})
            if isinstance(env, dict):
                for key in ROLE_ENV_KEYS:
                    own = env.get(key) or ""
                    if isinstance(own, Mapping):  # the mapping form of an env setting
                        own = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in own.items())
                    if isinstance(own, str):
                        env[key] = f"{self.env} {own}".strip()
        hw = merged.setdefault("hardware", {})
        if isinstance(hw, dict) and self.gpu_type and "gpu_type" not in hw:
            hw["gpu_type"] = self.gpu_type
        self._resolve_aliases(merged)
        return merged

    def _resolve_aliases(self, merged: dict[str, Any]) -> None:
        for section, key in (("slurm", "container_image"), ("environment", "container_image")):
            sect = merged.get(section)
            if isinstance(sect, dict) and sect.get(key) in self.aliases.containers:
                sect[key] = self.aliases.containers[sect[key]]
        env = merged.get("environment")
        if not isinstance(env, dict):
            return
        path = env.get("model_path")
        if isinstance(path, str) and path in self.aliases.models:
            env["model_path"] = self.aliases.models[path]
        elif not path and self.model_root:
            meta = merged.get("metadata") or {}
            dir_name = meta.get("model_dir_name") if isinstance(meta, dict) else None
            if isinstance(dir_name, str) and dir_name:
                env["model_path"] = self.aliases.models.get(dir_name, f"{self.model_root.rstrip('/')}/{dir_name}")


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_cluster(path: Path | str) -> ClusterDefaults:
    path = Path(path)
    raw = read_yaml(path)
    try:
        cluster = ClusterDefaults.model_validate({**raw, "source": str(path)})
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else str(err["msg"])
        raise ConfigError(str(path), key, msg) from None
    try:
        parse_env_string(cluster.env)
    except ValueError as exc:
        raise ConfigError(str(path), "env", str(exc)) from None
    return cluster


def find_cluster(name: str, dirs: list[Path]) -> Path | None:
    """The cluster defaults file called ``name`` (file stem, or its ``name:`` field) in ``dirs``, or None."""
    if not name or "/" in name or name.startswith("."):
        return None
    for d in dirs:
        candidate = d / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    for d in dirs:
        for path in sorted(d.glob("*.yaml")) if d.is_dir() else []:
            try:
                raw = read_yaml(path)
            except ConfigError:
                continue
            if raw.get("name") == name:
                return path
    return None


def cluster_from_env_or_arg(arg: str | None, environ: Mapping[str, str] = os.environ) -> ClusterDefaults | None:
    """``--cluster FILE`` wins over ``$PERFSANITY_CLUSTER``; neither → None."""
    if arg == "":
        raise ConfigError(None, "--cluster", "is empty: name a cluster defaults file")
    chosen = arg if arg is not None else environ.get(ENV_VAR)
    return load_cluster(chosen) if chosen else None
