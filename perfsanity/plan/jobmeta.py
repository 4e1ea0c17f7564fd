"""The job-level schema of the perf history, and ``job_meta.json`` derived from a job's config.

* :data:`MATCH_KEY_FIELDS` is the one definition of the history match keys (name, type, and the width
  of the database column for strings). Everything else is derived from it: the :class:`MatchKeys`
  dataclass here, the pydantic model of the ``keys`` section of ``job_meta.json`` (all keys but
  ``concurrency``, which comes from each result), and the ORM columns in
  :mod:`perfsanity.results.history`.
* :class:`RunMeta` is where a run comes from; :class:`JobMeta` is ``JOB_DIR/job_meta.json`` (match keys +
  provenance + the config's ``gate:`` section), written by the launcher and read on the submit side.
  Its on-disk format: a JSON object with ``keys`` (in :data:`MATCH_KEY_FIELDS` order), ``commit``,
  ``branch``, ``build_url``, ``job_id``, ``timestamp`` and ``gate``.
* :func:`job_meta` builds a :class:`JobMeta` from a resolved config and its topology.

Bad input is a :class:`~perfsanity.common.errors.ConfigError` naming the file and field.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from perfsanity.common.errors import ConfigError
from perfsanity.common.files import read_json, write_atomic
from perfsanity.common.redact import mask_url
from perfsanity.spec.config import Config, WorkerConfig
from perfsanity.spec.topology import Topology

JOB_META_FILE = "job_meta.json"


class KeyField(NamedTuple):
    """One history match key: its name, Python type (str / int / bool), and DB width for strings."""

    name: str
    type: type
    width: int = 0


MATCH_KEY_FIELDS: tuple[KeyField, ...] = (
    KeyField("config_name", str, 255),
    KeyField("model", str, 255),
    KeyField("precision", str, 64),
    KeyField("gpu_type", str, 64),
    KeyField("backend", str, 64),
    KeyField("mode", str, 64),  # e2e / gen_only / ctx_only / aggr …
    KeyField("num_ctx_servers", int),
    KeyField("num_gen_servers", int),
    KeyField("ctx_tp", int),
    KeyField("ctx_pp", int),
    KeyField("ctx_ep", int),
    KeyField("ctx_attention_dp", bool),
    KeyField("gen_tp", int),
    KeyField("gen_pp", int),
    KeyField("gen_ep", int),
    KeyField("gen_attention_dp", bool),
    KeyField("isl", int),
    KeyField("osl", int),
    KeyField("concurrency", int),  # per result: not in job_meta.json
    KeyField("total_gpus", int),
    # per result (perfsanity.spec.benchmark_types; migration 0003): the point's type and stable label
    KeyField("benchmark_type", str, 32),
    KeyField("point", str, 128),
)
PER_RESULT_KEYS = frozenset({"concurrency", "benchmark_type", "point"})
#: job_meta.json keys a point may replace with its own value (an ``isl_osl`` pair)
POINT_OVERRIDABLE_KEYS = ("isl", "osl")


def default_point(concurrency: int) -> str:
    """The label of a plain concurrency point (perfsanity.spec.benchmark_types.default_label)."""
    return f"c{concurrency}"


def utc(ts: datetime) -> datetime:
    """Aware datetime in UTC; naive input is an error (we never guess a timezone)."""
    if ts.tzinfo is None or ts.tzinfo.utcoffset(ts) is None:
        raise ConfigError(None, "timestamp", f"must be timezone-aware, got naive {ts.isoformat()}")
    return ts.astimezone(UTC)


# --------------------------------------------------------------------------------------------- keys


class _MatchKeysMethods:
    """Behaviour of :class:`MatchKeys` (its fields come from :data:`MATCH_KEY_FIELDS`)."""

    def __post_init__(self) -> None:
        if not self.point:  # type: ignore[attr-defined]  # keys made before benchmark types: the plain point
            object.__setattr__(self, "point", default_point(self.concurrency))  # type: ignore[attr-defined]
        for f in MATCH_KEY_FIELDS:
            value = getattr(self, f.name)
            if f.type is str:
                if not isinstance(value, str):
                    raise ConfigError(None, f"keys.{f.name}", f"must be a string, got {value!r}")
            elif f.type is bool:
                if not isinstance(value, bool):
                    raise ConfigError(None, f"keys.{f.name}", f"must be true/false, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(None, f"keys.{f.name}", f"must be an integer >= 0, got {value!r}")

    def with_concurrency(self, concurrency: int) -> Any:
        """These keys at a plain concurrency point ``c<concurrency>``."""
        return dataclasses.replace(self, concurrency=concurrency, benchmark_type="concurrency",  # type: ignore[type-var]
                                   point=default_point(concurrency))

    def for_result(self, result: Any) -> Any:
        """These keys at the point ``result`` measured (a ``ConcurrencyResult``: its concurrency,
        benchmark_type, label, and its own isl/osl when it has them)."""
        own = {k: getattr(result, k) for k in POINT_OVERRIDABLE_KEYS if getattr(result, k, None) is not None}
        return dataclasses.replace(self, concurrency=result.concurrency,  # type: ignore[type-var]
                                   benchmark_type=result.benchmark_type, point=result.label, **own)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in MATCH_KEY_FIELDS)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, file: str | None = None) -> Any:
        """Build from a mapping; unknown or missing keys are a :class:`ConfigError`."""
        names = set(cls.field_names())
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(file, "keys", f"unknown key(s) {unknown}; allowed: {sorted(names)}")
        missing = sorted(names - set(data) - set(KEY_DEFAULTS))
        if missing:
            raise ConfigError(file, "keys", f"missing key(s) {missing}")
        try:
            return cls(**dict(data))
        except ConfigError as exc:
            raise ConfigError(file, exc.key_path, exc.message) from None


#: keys with a default (older callers and records name no benchmark type; point "" means c<concurrency>)
KEY_DEFAULTS: dict[str, Any] = {"benchmark_type": "concurrency", "point": ""}

MatchKeys = dataclasses.make_dataclass(
    "MatchKeys", [(f.name, f.type, dataclasses.field(default=KEY_DEFAULTS[f.name])) if f.name in KEY_DEFAULTS
                  else (f.name, f.type) for f in MATCH_KEY_FIELDS], bases=(_MatchKeysMethods,),
    frozen=True, kw_only=True,
    namespace={"__doc__": "What must be equal for two measurements to be comparable (one history series "
                          "per value); fields: :data:`MATCH_KEY_FIELDS`."},
)
MatchKeys.__module__ = __name__  # picklable (history writers run in worker processes)

_KeysModel = create_model(
    "_KeysModel", __config__=ConfigDict(extra="forbid", frozen=True, strict=True),
    **{f.name: (f.type, ...) for f in MATCH_KEY_FIELDS if f.name not in PER_RESULT_KEYS},
)
_KeysModel.__doc__ = "Match keys as found in ``job_meta.json`` (concurrency comes from each result)."


def keys_at(keys: Any, result: Any) -> Any:
    """The match keys of ``result``'s point from ``keys``: common :class:`MatchKeys` (moved to the point),
    or a mapping point label → keys (a plain concurrency point may also be found by its concurrency).
    None when the mapping has no entry for the point."""
    if isinstance(keys, MatchKeys):
        return keys.for_result(result)
    found = keys.get(result.label)
    if found is None and result.label == default_point(result.concurrency):
        found = keys.get(result.concurrency)
    return found


# --------------------------------------------------------------------------------------------- meta


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunMeta:
    """Where a run comes from. ``timestamp`` defaults to now (UTC)."""

    commit: str = ""
    branch: str = ""
    build_url: str = ""
    job_id: str = ""
    timestamp: datetime | None = None
    post_merge: bool = False
    run_id: str = ""  # the job's run id: recording it twice is refused by the history DB (unique key)
    valid: bool = True
    invalid_reason: str = ""

    def resolved_timestamp(self) -> datetime:
        return utc(self.timestamp) if self.timestamp is not None else datetime.now(UTC)


class JobMeta(BaseModel):
    """``JOB_DIR/job_meta.json``: match keys + provenance of a job, written by the launcher.

    ``gate`` is the test config's optional ``gate:`` section, copied verbatim (validated by
    :class:`perfsanity.results.gate.GateConfig`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: _KeysModel  # type: ignore[valid-type]
    commit: str = ""
    branch: str = ""
    build_url: str = ""
    job_id: str = ""
    timestamp: datetime | None = None
    gate: dict[str, Any] | None = None
    run_id: str = ""  # one per prepared job (a UUID): the history's key of "this job was recorded"

    def match_keys(self, concurrency: int) -> Any:
        """The keys of the plain concurrency point ``c<concurrency>``."""
        return MatchKeys(**self.keys.model_dump(), concurrency=concurrency, benchmark_type="concurrency",
                         point=default_point(concurrency))

    def keys_for(self, result: Any) -> Any:
        """The keys of the point ``result`` (a ``ConcurrencyResult``) measured."""
        return self.match_keys(result.concurrency).for_result(result)

    def run_meta(self, *, post_merge: bool) -> RunMeta:
        return RunMeta(
            commit=self.commit,
            branch=self.branch,
            build_url=self.build_url,
            job_id=self.job_id,
            timestamp=self.timestamp,
            post_merge=post_merge,
            run_id=self.run_id,
        )

    @classmethod
    def read(cls, path: Path) -> JobMeta:
        try:
            meta = cls.model_validate(read_json(path))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise ConfigError(str(path), loc, f"{err['msg']} (got {err.get('input')!r})") from None
        if meta.timestamp is not None and meta.timestamp.tzinfo is None:
            raise ConfigError(str(path), "timestamp", "must carry a timezone, e.g. 2025-01-31T02:00:00Z")
        return meta

    def to_json(self) -> str:
        """The file's text (a job dir from before run ids has none, and keeps having none)."""
        return self.model_dump_json(indent=2, exclude=None if self.run_id else {"run_id"}) + "\n"

    def write(self, path: Path) -> None:
        write_atomic(path, self.to_json())


# ------------------------------------------------------------------------------------- from config


def _par(worker: WorkerConfig | None) -> dict[str, int | bool]:
    if worker is None:
        return {"tp": 0, "pp": 0, "ep": 0, "attention_dp": False}
    return {"tp": worker.tensor_parallel_size, "pp": worker.pipeline_parallel_size,
            "ep": worker.moe_expert_parallel_size or 1, "attention_dp": worker.enable_attention_dp}


def gpu_type(config: Config, environ: Mapping[str, str]) -> str:
    if config.hardware.gpu_type:
        return config.hardware.gpu_type
    if environ.get("PERFSANITY_GPU_TYPE"):
        return environ["PERFSANITY_GPU_TYPE"]
    return config.metadata.supported_gpus[0] if config.metadata.supported_gpus else "unknown"


def job_meta(config: Config, topology: Topology, *, commit: str | None,
             environ: Mapping[str, str] = os.environ) -> JobMeta:
    wc = config.worker_config
    gen = wc.server if config.kind == "aggr" else wc.gen
    ctx = None if config.kind == "aggr" else (wc.ctx if config.num_ctx_servers else None)
    g, c = _par(gen), _par(ctx)
    keys = {
        "config_name": config.name,
        "model": config.metadata.model_name,
        "precision": config.metadata.precision or "",
        "gpu_type": gpu_type(config, environ),
        "backend": config.metadata.backend,
        "mode": config.benchmark.mode if config.kind == "disagg" else "aggr",
        "num_ctx_servers": len(topology.of_kind("ctx")),
        "num_gen_servers": len(topology.of_kind("gen")) or len(topology.of_kind("server")),
        "ctx_tp": c["tp"], "ctx_pp": c["pp"], "ctx_ep": c["ep"], "ctx_attention_dp": c["attention_dp"],
        "gen_tp": g["tp"], "gen_pp": g["pp"], "gen_ep": g["ep"], "gen_attention_dp": g["attention_dp"],
        "isl": config.benchmark.input_length,
        "osl": config.benchmark.output_length,
        "total_gpus": topology.total_gpus,
    }
    return JobMeta.model_validate({
        "keys": keys,
        "commit": environ.get("GIT_COMMIT") or commit or "",
        "branch": environ.get("BRANCH_NAME") or environ.get("GIT_BRANCH") or "",
        "build_url": mask_url(environ.get("BUILD_URL", ""), keep_user=False),
        "job_id": environ.get("SLURM_JOB_ID", ""),
        "timestamp": dt.datetime.now(dt.UTC),
        "gate": config.gate,
        "run_id": str(uuid.uuid4()),
    })
