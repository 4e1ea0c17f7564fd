"""Sweeps: one base test config × a grid of parameter values → one ordinary job directory per point.

A sweep file (strict schema; unknown keys are errors)::

    base: test_configs/disagg/perf/mocker-ctx1-gen1.yaml   # relative to the sweep file, else the repo
    mode: product                  # product (cartesian, default) | zip (i-th values together)
    parameters:                    # dotted config keys → list of values
      hardware.num_gen_servers: [1, 2]
      benchmark.concurrency_list: ["1 4", "8"]
      worker_config.gen.max_batch_size: [64, 128]   # one role's engine option ...
      worker_config.*.max_num_tokens: [2048, 4096]  # ... or every role the base config has
    name: "{base}-gen{hardware.num_gen_servers}"    # optional point-name template

A test config may instead carry the same keys (minus ``base``) in a top-level ``sweep:`` block; it
is then its own base.

``submit.py --sweep FILE --out DIR`` validates every point (config + topology + launch.sh) before
anything is written, then writes ``DIR/<point>/`` (a normal job dir) per point and
``DIR/sweep_manifest.json``. ``--submit`` sbatches the points (``--max-jobs`` caps how many are in
SLURM at once; ``--retries N`` waits and resubmits points lost to an infrastructure failure such as
NODE_FAIL, never a test failure), ``--local`` runs them one after another on this machine. Running
the same command again resumes from the manifest without submitting any point twice.

Each point's config is materialised as ``DIR/<point>/config/<kind>/<base-stem>.yaml`` (the base with
the point's values applied) and the job is prepared from that file, because the job's roles re-read
``$PERFSANITY_CONFIG`` at run time: the values must be in the file, not only in launch.sh. The file
keeps the base's stem, so the point's config name and pytest id are the base's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import hashlib
import itertools
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from perfsanity.common.cliutil import run_main
from perfsanity.common.errors import ConfigError, PerfsanityError
from perfsanity.common.files import read_json, write_atomic
from perfsanity.common.tables import render_table as format_table
from perfsanity.plan.launch import REPO_ROOT
from perfsanity.plan.prepare import PreparedJob, parse_set, prepare_direct
from perfsanity.spec.cluster import ClusterDefaults
from perfsanity.spec.config import apply_overrides, kind_of, read_yaml

MANIFEST_FILE = "sweep_manifest.json"
SCHEMA_VERSION = 1
MAX_POINTS = 1000
MAX_NAME_LEN = 150
# seconds between SLURM polls while waiting for a sweep's jobs: from POLL_FIRST_S, doubling up to POLL_S, and
# back to POLL_FIRST_S after a change (a job that ended may let the next point start, and is collected at once)
POLL_FIRST_S = 1.0
POLL_S = 10.0
ROLES = ("ctx", "gen", "server")

# point states that are not SLURM states
NOT_SUBMITTED = "pending"
SUBMIT_FAILED = "submit-failed"
SUBMITTED = "SUBMITTED"
UNKNOWN = "UNKNOWN"
LOCAL_JOB_ID = "local"
# entries of a point dir that belong to the job's definition (kept when a retry archives the rest)
_DEFINITION = frozenset({"launch.sh", "config.resolved.yaml", "job.json", "config", "attempts"})

# indirections so that tests can drive time without sleeping
_now = time.time
_sleep = time.sleep


# ------------------------------------------------------------------------------------------ schema


class SweepBlock(BaseModel):
    """The ``sweep:`` block of a test config (a sweep file adds ``base``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["product", "zip"] = "product"
    parameters: dict[str, list[Any]]
    name: str | None = None

    @field_validator("parameters")
    @classmethod
    def _non_empty(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not v:
            raise ValueError("needs at least one key")
        for key, values in v.items():
            if not values:
                raise ValueError(f"{key!r} has no values")
        return v


class SweepFile(SweepBlock):
    base: str


_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(?:\.(?:[A-Za-z_][A-Za-z0-9_-]*|\*))*")
_RESERVED = ("name", "kind", "source", "sweep")


def _schema_error(exc: ValidationError, source: str, prefix: str, model: type[BaseModel]) -> ConfigError:
    errors = exc.errors(include_url=False)
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])  # typos first
    loc = [str(p) for p in err["loc"]]
    if len(loc) >= 2 and loc[0] == "parameters":
        key = f'{prefix}parameters["{loc[1]}"]'
    else:
        key = prefix + ".".join(loc)
    if err["type"] == "extra_forbidden":
        allowed = [k for k in model.model_fields]
        hint = difflib.get_close_matches(loc[-1], allowed, n=1)
        msg = f"unknown key {loc[-1]!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        return ConfigError(source, key, f"{msg}; allowed keys: {', '.join(allowed)}")
    if err["type"] == "missing":
        return ConfigError(source, key, "is required but missing")
    if err["type"] == "list_type":
        return ConfigError(source, key, f"must be a list of values, e.g. [1, 2]; got {err.get('input')!r}")
    return ConfigError(source, key, str(err["msg"]).removeprefix("Value error, "))


# ------------------------------------------------------------------------------------------ points


@dataclass(frozen=True)
class SweepPoint:
    index: int
    name: str
    parameters: dict[str, Any]  # as written in the sweep (keys may hold ``*``)
    overrides: dict[str, Any]  # dotted config keys, wildcards expanded, fixed overrides included


@dataclass(frozen=True)
class Sweep:
    source: Path  # the sweep file (or the test config holding a ``sweep:`` block)
    base: Path  # the base test config
    base_raw: dict[str, Any]  # the base's YAML without its ``sweep:`` block
    mode: str
    parameters: dict[str, list[Any]]
    name_template: str | None
    points: tuple[SweepPoint, ...]
    fixed_overrides: dict[str, Any]

    @property
    def kind(self) -> str:
        return kind_of(self.base)

    def point(self, name: str) -> SweepPoint:
        return next(p for p in self.points if p.name == name)


def load_sweep(path: Path | str, *, fixed_overrides: Mapping[str, Any] | None = None) -> Sweep:
    """Read a sweep file (or a test config with a ``sweep:`` block) and expand its points.

    ``fixed_overrides`` (``--set``/``--mode``) apply to every point; a sweep key may not repeat one.
    Configs are not validated here (see :func:`validate_points`).
    """
    path = Path(path)
    src = str(path)
    raw = read_yaml(path)
    if "base" in raw:
        try:
            spec: SweepBlock = SweepFile.model_validate(raw)
        except ValidationError as exc:
            raise _schema_error(exc, src, "", SweepFile) from None
        base = _resolve_base(path, spec.base)  # type: ignore[attr-defined]
        base_raw = read_yaml(base)
    elif "sweep" in raw:
        block = raw["sweep"]
        if not isinstance(block, dict):
            raise ConfigError(src, "sweep", "must be a mapping with parameters (and optionally mode, name)")
        try:
            spec = SweepBlock.model_validate(block)
        except ValidationError as exc:
            raise _schema_error(exc, src, "sweep.", SweepBlock) from None
        base, base_raw = path, raw
    else:
        raise ConfigError(src, "", "not a sweep: expected a sweep file with 'base:' and 'parameters:', "
                                   "or a test config with a 'sweep:' block")
    base_raw = {k: v for k, v in base_raw.items() if k != "sweep"}
    prefix = "" if "base" in raw else "sweep."
    fixed = dict(fixed_overrides or {})
    expanded = _expand_keys(spec.parameters, base_raw, src, prefix)
    for key, targets in expanded.items():
        for t in targets:
            if t in fixed:
                raise ConfigError(src, f'{prefix}parameters["{key}"]', f"also set on the command line ({t})")
    combos = _combinations(spec, src, prefix)
    points = []
    for i, combo in enumerate(combos):
        params = dict(zip(spec.parameters, combo, strict=True))
        overrides = dict(fixed)
        for key, value in params.items():
            for t in expanded[key]:
                overrides[t] = value
        points.append((i, params, overrides))
    names = _point_names(spec, base, points, expanded, src, prefix)
    return Sweep(
        source=path,
        base=base,
        base_raw=base_raw,
        mode=spec.mode,
        parameters=dict(spec.parameters),
        name_template=spec.name,
        points=tuple(SweepPoint(i, n, p, o) for (i, p, o), n in zip(points, names, strict=True)),
        fixed_overrides=fixed,
    )


def _resolve_base(sweep_path: Path, base: str) -> Path:
    given = Path(base).expanduser()
    candidates = [given] if given.is_absolute() else [sweep_path.parent / given, REPO_ROOT / given, given]
    for cand in candidates:
        if cand.is_file():
            return cand
    tried = ", ".join(dict.fromkeys(str(c) for c in candidates))
    raise ConfigError(str(sweep_path), "base", f"{base!r} not found (looked at {tried})")


def _expand_keys(params: Mapping[str, list[Any]], base_raw: Mapping[str, Any], src: str,
                 prefix: str) -> dict[str, list[str]]:
    """Sweep key → the dotted config keys it sets (``worker_config.*.x`` → one per role present)."""
    wc = base_raw.get("worker_config")
    roles = [r for r in ROLES if isinstance(wc, dict) and isinstance(wc.get(r), dict)]
    out: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for key in params:
        where = f'{prefix}parameters["{key}"]'
        if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
            raise ConfigError(src, where, "not a dotted config key such as worker_config.gen.max_batch_size")
        parts = key.split(".")
        if parts[0] in _RESERVED:
            raise ConfigError(src, where, f"{parts[0]!r} cannot be swept (it comes from the file name and place)")
        if "*" in parts:
            if parts[0] != "worker_config" or parts[1] != "*" or len(parts) < 3 or parts.count("*") != 1:
                raise ConfigError(src, where, "'*' is only allowed as the role: worker_config.*.<key>")
            if not roles:
                raise ConfigError(src, where, "the base config has no worker_config roles for '*'")
            targets = [".".join(["worker_config", r, *parts[2:]]) for r in roles]
        else:
            targets = [key]
        for t in targets:
            if t in seen:
                raise ConfigError(src, where, f"sets {t}, which {seen[t]!r} sets too")
            seen[t] = key
        out[key] = targets
    all_targets = sorted(seen)
    for a in all_targets:
        for b in all_targets:
            if b.startswith(a + "."):
                raise ConfigError(src, f'{prefix}parameters["{seen[b]}"]',
                                  f"{b} is inside {a}, which {seen[a]!r} replaces as a whole")
    return out


def _combinations(spec: SweepBlock, src: str, prefix: str) -> list[tuple[Any, ...]]:
    lists = list(spec.parameters.values())
    if spec.mode == "zip":
        lengths = {k: len(v) for k, v in spec.parameters.items()}
        first_key, n = next(iter(lengths.items()))
        for key, length in lengths.items():
            if length != n:
                raise ConfigError(src, f'{prefix}parameters["{key}"]',
                                  f"zip mode needs lists of equal length: {length} values, "
                                  f"but {first_key!r} has {n}")
        combos = list(zip(*lists, strict=True))
    else:
        total = 1
        for v in lists:
            total *= len(v)
        if total > MAX_POINTS:
            raise ConfigError(src, f"{prefix}parameters", f"{total} points (more than {MAX_POINTS})")
        for key, values in spec.parameters.items():
            canon = [_canon(v) for v in values]
            for i, c in enumerate(canon):
                if c in canon[:i]:
                    raise ConfigError(src, f'{prefix}parameters["{key}"]', f"duplicate value {values[i]!r}")
        combos = list(itertools.product(*lists))
    if len(combos) > MAX_POINTS:
        raise ConfigError(src, f"{prefix}parameters", f"{len(combos)} points (more than {MAX_POINTS})")
    canon_points = [_canon(c) for c in combos]
    for i, c in enumerate(canon_points):
        if c in canon_points[:i]:
            j = canon_points.index(c)
            raise ConfigError(src, f"{prefix}parameters", f"points #{j} and #{i} have the same values")
    return combos


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


# ------------------------------------------------------------------------------------------ names

_ALIASES = {
    "num_gen_servers": "ngen",
    "num_ctx_servers": "nctx",
    "num_servers": "nsrv",
    "gpus_per_node": "gpn",
    "concurrency_list": "c",
    "max_batch_size": "bs",
    "max_num_tokens": "tok",
    "max_num_seqs": "seqs",  # the vLLM-style names (dynamo.mocker, SGLang's max_running_requests aside)
    "max_num_batched_tokens": "tok",
    "tensor_parallel_size": "tp",
    "pipeline_parallel_size": "pp",
    "context_parallel_size": "cp",
    "moe_expert_parallel_size": "ep",
    "enable_attention_dp": "adp",
    "input_length": "isl",
    "output_length": "osl",
    "multi_round": "rounds",
    "mode": "",
}


def sanitize(text: str) -> str:
    """Keep ``[A-Za-z0-9._-]``; runs of anything else become one ``_``; no leading dot or dash."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text)
    text = re.sub(r"_+", "_", text).strip("_")
    return text.lstrip(".-") or "point"


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return "_".join(_value_text(v) for v in value)
    if isinstance(value, dict):
        return "_".join(f"{k}_{_value_text(v)}" for k, v in value.items())
    return str(value)


def _part(key: str, value: Any) -> str:
    parts = key.split(".")
    leaf = parts[-1]
    role = parts[1] + "." if parts[0] == "worker_config" and len(parts) >= 3 and parts[1] != "*" else ""
    alias = _ALIASES.get(leaf)
    if isinstance(value, bool):
        word = alias or leaf
        return role + (word if value else f"no{'' if alias else '_'}{word}")
    if alias is not None:
        return role + alias + _value_text(value)
    return f"{role}{leaf}_{_value_text(value)}"


def _short_hash(data: Any, n: int = 6) -> str:
    return hashlib.sha1(_canon(data).encode()).hexdigest()[:n]  # noqa: S324 - a name suffix, not security


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def _template_fields(base: Path, index: int, params: Mapping[str, Any], expanded: Mapping[str, list[str]]
                     ) -> dict[str, Any]:
    fields: dict[str, Any] = {"base": base.stem, "index": index}
    leaves: dict[str, list[Any]] = {}
    for key, value in params.items():
        fields[key] = value
        for t in expanded[key]:
            fields.setdefault(t, value)
        leaves.setdefault(key.split(".")[-1], []).append(value)
    for leaf, values in leaves.items():
        if len(values) == 1:
            fields.setdefault(leaf, values[0])
    return fields


def _point_names(spec: SweepBlock, base: Path, points: list[tuple[int, dict, dict]],
                 expanded: Mapping[str, list[str]], src: str, prefix: str) -> list[str]:
    names = []
    for index, params, _ in points:
        if spec.name:
            fields = _template_fields(base, index, params, expanded)

            def sub(m: re.Match[str], fields: dict[str, Any] = fields) -> str:
                field = m.group(1).strip()
                if field not in fields:
                    known = ", ".join(fields)
                    raise ConfigError(src, f"{prefix}name", f"unknown placeholder {{{field}}}; known: {known}")
                return _value_text(fields[field])

            name = sanitize(_PLACEHOLDER.sub(sub, spec.name))
        else:
            name = sanitize("-".join([base.stem, *(_part(k, v) for k, v in params.items())]))
        if len(name) > MAX_NAME_LEN:
            name = name[: MAX_NAME_LEN - 9].rstrip("._-") + "-" + _short_hash(params, 8)
        names.append(name)
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    names = [n if counts[n] == 1 else f"{n}-{_short_hash(p)}" for n, (_, p, _) in zip(names, points, strict=True)]
    if len(set(names)) != len(names):  # pragma: no cover - needs a hash collision
        dup = next(n for n in names if names.count(n) > 1)
        raise ConfigError(src, f"{prefix}name", f"two points are both named {dup!r}")
    if MANIFEST_FILE in names:
        raise ConfigError(src, f"{prefix}name", f"a point may not be named {MANIFEST_FILE}")
    return names


# ------------------------------------------------------------------------------- validate & prepare


def point_config_text(sweep: Sweep, point: SweepPoint) -> str:
    """The point's test config: the base's YAML with the point's values applied."""
    data = apply_overrides(sweep.base_raw, point.overrides, source=str(sweep.base)) if point.overrides \
        else dict(sweep.base_raw)
    header = (f"# Generated by perfsanity sweep {sweep.source} (point {point.name}): {sweep.base}\n"
              f"# with {json.dumps(point.overrides, default=str)}. The job reads this file; do not edit.\n")
    return header + yaml.safe_dump(data, sort_keys=False)


def point_config_path(sweep: Sweep, out_dir: Path, point: SweepPoint) -> Path:
    return out_dir / point.name / "config" / sweep.kind / f"{sweep.base.stem}.yaml"


def _point_error(sweep: Sweep, point: SweepPoint, exc: ConfigError) -> ConfigError:
    key = exc.key_path or ""
    return ConfigError(str(sweep.source), key, f"point {point.name!r} (#{point.index}, "
                       f"{json.dumps(point.parameters, default=str)}): {exc.message}")


def validate_points(sweep: Sweep, out_dir: Path, *, cluster: ClusterDefaults | None = None) -> None:
    """Load, merge and validate every point, compute its topology and render its launch.sh.

    Writes nothing under ``out_dir`` (scratch files go to a temporary directory). The first bad point
    raises a :class:`ConfigError` naming the sweep file, the key and the point.
    """
    out_dir = out_dir.resolve()
    if kind_of(point_config_path(sweep, out_dir, sweep.points[0])) != sweep.kind:
        raise ConfigError(None, "--out", f"{out_dir} has a directory named 'aggr' in its path, which would "
                                         "make the points aggregated configs; choose another directory")
    with tempfile.TemporaryDirectory(prefix="perfsanity-sweep-") as tmp:
        for point in sweep.points:
            scratch = Path(tmp) / str(point.index) / sweep.kind / f"{sweep.base.stem}.yaml"
            try:
                text = point_config_text(sweep, point)
                scratch.parent.mkdir(parents=True)
                scratch.write_text(text)
                prepare_direct(scratch, out_dir / point.name, cluster=cluster)
            except ConfigError as exc:
                raise _point_error(sweep, point, exc) from None


def prepare_point(sweep: Sweep, out_dir: Path, point: SweepPoint, *,
                  cluster: ClusterDefaults | None = None) -> PreparedJob:
    """Write the point's config file (only if it changed) and render its job (not yet written)."""
    path = point_config_path(sweep, out_dir, point)
    text = point_config_text(sweep, point)
    try:
        current = path.read_text()
    except OSError:
        current = None
    if current != text:
        write_atomic(path, text)
    try:
        return prepare_direct(path, out_dir / point.name, cluster=cluster)
    except ConfigError as exc:
        raise _point_error(sweep, point, exc) from None


# ---------------------------------------------------------------------------------------- manifest


def _iso(epoch: float | None = None) -> str:
    when = dt.datetime.fromtimestamp(epoch if epoch is not None else _now(), dt.UTC)
    return when.isoformat(timespec="seconds")


def new_manifest(sweep: Sweep, out_dir: Path, cluster: ClusterDefaults | None) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "created": _iso(),
        "updated": _iso(),
        "sweep_file": str(sweep.source.resolve()),
        "base": str(sweep.base.resolve()),
        "mode": sweep.mode,
        "name_template": sweep.name_template,
        "parameters": sweep.parameters,
        "fixed_overrides": sweep.fixed_overrides,
        "cluster": cluster.source if cluster else None,
        "points": [
            {
                "name": p.name,
                "index": p.index,
                "parameters": p.parameters,
                "overrides": p.overrides,
                "job_dir": p.name,
                "config_path": str(point_config_path(sweep, Path(), p)),
                "job_id": None,
                "state": NOT_SUBMITTED,
                "exit_code": None,
                "attempts": [],
            }
            for p in sweep.points
        ],
    }


def read_manifest(path: Path) -> dict[str, Any]:
    """``DIR/sweep_manifest.json`` (or the file itself) → dict; ConfigError if unreadable."""
    if path.is_dir():
        path = path / MANIFEST_FILE
    data = read_json(path, missing="file not found (is this a sweep directory?)")
    if not isinstance(data, dict) or not isinstance(data.get("points"), list):
        raise ConfigError(str(path), "points", "missing: not a sweep manifest")
    return data


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    manifest["updated"] = _iso()
    write_atomic(out_dir / MANIFEST_FILE, json.dumps(manifest, indent=2, default=str) + "\n")


def _same_points(manifest: dict[str, Any], sweep: Sweep) -> bool:
    old = [(p.get("name"), _canon(p.get("overrides"))) for p in manifest["points"]]
    new = [(p.name, _canon(p.overrides)) for p in sweep.points]
    return old == new


def open_sweep_dir(sweep: Sweep, out_dir: Path, cluster: ClusterDefaults | None) -> tuple[dict[str, Any], bool]:
    """The manifest of ``out_dir``: the existing one (resume) or a new one. Returns (manifest, resumed)."""
    path = out_dir / MANIFEST_FILE
    if path.exists():
        manifest = read_manifest(path)
        if not _same_points(manifest, sweep):
            raise ConfigError(str(path), "points", f"{out_dir} holds a different sweep (other points or values); "
                                                   "use another --out, or delete that directory")
        return manifest, True
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(None, "--out", f"{out_dir} is not empty and holds no {MANIFEST_FILE}; "
                                         "use an empty or new directory")
    return new_manifest(sweep, out_dir, cluster), False


# ------------------------------------------------------------------------------------------ states


def _terminal_states() -> frozenset[str]:
    from perfsanity.jobs.slurm import TERMINAL_STATES

    return TERMINAL_STATES


def _infra_states() -> frozenset[str]:
    from perfsanity.jobs.slurm import INFRASTRUCTURE_FAILURE_STATES

    return INFRASTRUCTURE_FAILURE_STATES


def _is_slurm_job(p: Mapping[str, Any]) -> bool:
    return bool(p.get("job_id")) and str(p["job_id"]).isdigit()


def _active(p: Mapping[str, Any]) -> bool:
    """A SLURM job of this point may still run (submitted, pending, running, requeued…)."""
    return _is_slurm_job(p) and p["state"] not in _terminal_states() and p["state"] not in (UNKNOWN,)


def _infra_failed(p: Mapping[str, Any]) -> bool:
    return _is_slurm_job(p) and p["state"] in _terminal_states() and p["state"] in _infra_states()


def _succeeded(p: Mapping[str, Any]) -> bool:
    return p.get("state") == "COMPLETED" and p.get("exit_code") in (0, None)


def _final_ok(p: Mapping[str, Any]) -> bool:
    """The point's results pipeline (gate) did not fail it (or has not run for it)."""
    return p.get("final_exit_code") in (0, None)


def _needs_submit(p: Mapping[str, Any]) -> bool:
    """Never submitted, sbatch refused it, only run locally, or lost to an infrastructure failure."""
    if p["state"] in (NOT_SUBMITTED, SUBMIT_FAILED) or p.get("job_id") == LOCAL_JOB_ID:
        return True
    return _infra_failed(p)


def _reset_deleted_points(out_dir: Path, manifest: dict[str, Any], progress: Progress) -> None:
    """A finished point whose job dir was deleted is run again (the way to rerun a test failure)."""
    for p in manifest["points"]:
        if p["state"] == NOT_SUBMITTED or _active(p):
            continue
        if not (out_dir / p["job_dir"] / "job.json").exists():
            progress.event(f"{p['name']}: job dir deleted; will run again (was {p['state']})")
            p.update(job_id=None, state=NOT_SUBMITTED, exit_code=None)
            p.pop("final_exit_code", None)


# ---------------------------------------------------------------------------------------- progress


class Progress:
    """Progress of a long wait: a plain line per state change when ``stream`` is not a terminal; one
    line rewritten in place (``\\r``, no other control codes) when it is."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._width = 0
        self._last_event = ""
        self._summary = ""

    def event(self, text: str) -> None:
        if self.tty:
            self._last_event = text
            self._draw()
        else:
            self.stream.write(f"[sweep {time.strftime('%H:%M:%S')}] {text}\n")
            self.stream.flush()

    def summary(self, text: str) -> None:
        """Overall state; shown (in the updating line) only on a terminal."""
        self._summary = text
        if self.tty:
            self._draw()

    def _draw(self) -> None:
        line = f"[sweep {time.strftime('%H:%M:%S')}] {self._summary}"
        if self._last_event:
            line += f" | {self._last_event}"
        cols = shutil.get_terminal_size((120, 20)).columns - 1
        line = line[:cols]
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def close(self) -> None:
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


def _summary(points: Sequence[Mapping[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for p in points:
        counts[p["state"]] = counts.get(p["state"], 0) + 1
    return f"{len(points)} points: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


# ------------------------------------------------------------------------------------------ submit


def _archive_attempt(job_dir: Path, p: dict[str, Any]) -> None:
    """Move the previous attempt's outputs (logs, results, rendezvous…) to ``attempts/<n>/``."""
    if not p["attempts"]:
        return
    last = p["attempts"][-1]
    entries = [e for e in job_dir.iterdir() if e.name not in _DEFINITION] if job_dir.is_dir() else []
    if not entries:
        return
    dest = job_dir / "attempts" / str(last["attempt"])
    dest.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        target = dest / entry.name
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        entry.replace(target)
    last["archived"] = str(dest.relative_to(job_dir))


def _submit_point(p: dict[str, Any], job: PreparedJob, progress: Progress, *, retry_of: str | None) -> bool:
    import perfsanity.jobs.slurm as slurm_jobs
    from perfsanity.jobs.submit import write_jobid

    _archive_attempt(job.job_dir, p)
    job.write()
    try:
        job_id = slurm_jobs.submit(job.launch_path, workdir=job.job_dir)
    except slurm_jobs.SlurmError as exc:
        p.update(state=SUBMIT_FAILED, error=str(exc), job_id=None, exit_code=None)
        progress.event(f"{p['name']}: sbatch failed: {exc}")
        return False
    write_jobid(job, job_id)
    now = _now()
    p["attempts"].append({
        "attempt": len(p["attempts"]) + 1,
        "job_id": job_id,
        "submitted": _iso(now),
        "submitted_epoch": now,
        "state": SUBMITTED,
        "exit_code": None,
        "ended": None,
        "infrastructure_failure": False,
    })
    p.update(job_id=job_id, state=SUBMITTED, exit_code=None)
    p.pop("error", None)
    p.pop("final_exit_code", None)
    why = f" (retry after {retry_of})" if retry_of else ""
    progress.event(f"{p['name']}: submitted job {job_id}{why}")
    return True


def _record(p: dict[str, Any], info: Any) -> bool:
    """Put a JobInfo into the point (and its current attempt). True if the state changed."""
    changed = (p["state"], p.get("exit_code")) != (info.state, info.exit_code)
    p.update(state=info.state, exit_code=info.exit_code)
    if p["attempts"] and p["attempts"][-1]["job_id"] == p["job_id"]:
        att = p["attempts"][-1]
        att.update(state=info.state, exit_code=info.exit_code)
        if info.finished and not att.get("ended"):
            att["ended"] = _iso()
            att["infrastructure_failure"] = info.state in _infra_states()
    return changed


def _query(job_id: str) -> Any:
    """job_state, or None when SLURM cannot answer now; JobNotFound → an UNKNOWN JobInfo."""
    import perfsanity.jobs.slurm as slurm_jobs

    try:
        return slurm_jobs.job_state(job_id)
    except slurm_jobs.JobNotFound:
        return slurm_jobs.JobInfo(job_id=job_id, state=UNKNOWN, reason="unknown to scontrol and sacct")
    except slurm_jobs.SlurmCommandError:
        return None


def submit_sweep(out_dir: Path, manifest: dict[str, Any], jobs: Mapping[str, PreparedJob], *,
                 max_jobs: int | None = None, retries: int = 0, wait: bool = False,
                 progress: Progress | None = None) -> int:
    """sbatch the points that need it (at most ``max_jobs`` in SLURM at once), optionally wait.

    Points whose job is pending, running or finished are never submitted again; a point lost to an
    infrastructure failure (``is_infrastructure_failure``) is resubmitted — on a later run, or while
    waiting up to ``retries`` times. Test failures (FAILED, TIMEOUT, exit ≠ 0…) are verdicts and stay.
    Returns 0 when nothing failed (and, when waiting, every point completed with exit code 0).
    """
    import perfsanity.jobs.slurm as slurm_jobs
    from perfsanity.jobs.submit import WAIT_MARGIN_S, write_jobid

    progress = progress or Progress()
    points = manifest["points"]
    save = lambda: write_manifest(out_dir, manifest)  # noqa: E731

    # refresh what SLURM knows about jobs submitted earlier; a job that ended meanwhile is collected
    # now, unless it was lost to the cluster (then launch() below submits it again)
    for p in points:
        if _active(p):
            info = _query(p["job_id"])
            if info is not None and _record(p, info):
                progress.event(f"{p['name']}: job {p['job_id']} {info.state}")
                if info.finished:
                    write_jobid(jobs[p["name"]], p["job_id"], info)
                    if not slurm_jobs.is_infrastructure_failure(info):
                        _collect_point(p, jobs[p["name"]].job_dir, info, progress)
    save()

    blocked: set[str] = set()  # infrastructure failures out of retries in this run
    retried: dict[str, int] = {}
    gave_up: set[str] = set()
    submit_errors = 0

    def launch() -> None:
        nonlocal submit_errors
        active = sum(1 for p in points if _active(p))
        for p in points:
            if not _needs_submit(p) or p["name"] in blocked:
                continue
            if max_jobs is not None and active >= max_jobs:
                break
            retry_of = p["state"] if _infra_failed(p) else None
            if _submit_point(p, jobs[p["name"]], progress, retry_of=retry_of):
                active += 1
            else:
                submit_errors += 1
                blocked.add(p["name"])
            save()  # after every sbatch: an interrupted run never submits a point twice

    launch()
    if not wait:
        left = sum(1 for p in points if p["state"] == NOT_SUBMITTED)
        if left:
            progress.event(f"{left} point(s) left pending (--max-jobs {max_jobs}); run the same command again "
                           "to submit more")
        return 1 if submit_errors else 0

    poll_s = POLL_FIRST_S
    try:
        while True:
            waiting = [p for p in points if _active(p) and p["name"] not in gave_up]
            active = sum(1 for p in points if _active(p))
            can_launch = any(_needs_submit(p) and p["name"] not in blocked for p in points) and (
                max_jobs is None or active < max_jobs)
            if not waiting and not can_launch:
                break
            progress.summary(_summary(points))
            if waiting:
                _sleep(poll_s)
            changed = False
            for p in waiting:
                job = jobs[p["name"]]
                info = _query(p["job_id"])
                if info is not None and _record(p, info):
                    changed = True
                    progress.event(f"{p['name']}: job {p['job_id']} {info.state}"
                                   + (f" (exit code {info.exit_code})" if info.finished else ""))
                if info is not None and (info.finished or info.state == UNKNOWN):
                    if info.finished:
                        write_jobid(job, p["job_id"], info)
                    if info.finished and slurm_jobs.is_infrastructure_failure(info):
                        if retried.get(p["name"], 0) < retries:
                            retried[p["name"]] = retried.get(p["name"], 0) + 1
                            progress.event(f"{p['name']}: infrastructure failure {info.state}; "
                                           f"retry {retried[p['name']]}/{retries}")
                            continue
                        blocked.add(p["name"])
                    if info.finished:  # the point's final attempt: its results pipeline runs now
                        _collect_point(p, job.job_dir, info, progress)
                        changed = True
                    continue
                submitted = p["attempts"][-1].get("submitted_epoch", _now()) if p["attempts"] else _now()
                bound = job.config.slurm.timeout + WAIT_MARGIN_S
                if _now() - submitted > bound:
                    gave_up.add(p["name"])
                    p["note"] = f"stopped waiting after {bound}s (slurm.timeout + {WAIT_MARGIN_S}s); job left as is"
                    progress.event(f"{p['name']}: {p['note']}")
                    changed = True
            if changed:
                save()
            poll_s = POLL_FIRST_S if changed else min(2 * poll_s, POLL_S)
            launch()
    finally:
        save()
        progress.summary(_summary(points))
        progress.close()
    ok = not submit_errors and not gave_up and all(_succeeded(p) and _final_ok(p) for p in points)
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------- collect


FINALIZE_LOG = "finalize.log"


def _finalize_quietly(job_dir: Path, call: Any) -> int:
    """Run a results pipeline call with its output (gate table, records) in the point's finalize.log,
    so that the sweep's progress lines stay readable."""
    import contextlib

    with (job_dir / FINALIZE_LOG).open("a") as log, contextlib.redirect_stdout(log):
        return call()


def _collect_point(p: dict[str, Any], job_dir: Path, info: Any, progress: Progress) -> None:
    """The results pipeline of a point's SLURM job that has ended (its final attempt)."""
    from perfsanity.jobs.submit import finalize_slurm_job

    try:
        rc = _finalize_quietly(job_dir, lambda: finalize_slurm_job(job_dir, info))
    except PerfsanityError as exc:
        progress.event(f"{p['name']}: results pipeline failed: {exc}")
        rc = 1
    p["final_exit_code"] = rc
    progress.event(f"{p['name']}: collected: {'passed' if rc == 0 else f'failed (exit code {rc})'}"
                   f" (junit.xml, gate.json; log {job_dir / FINALIZE_LOG})")


def _collect_local(p: dict[str, Any], job_dir: Path, rc: int, progress: Progress, started: float) -> int:
    """The results pipeline of a point run locally, unless the local executor already ran it (its
    ``finalized.json`` is newer than the run's start): then that verdict stands."""
    from perfsanity.results import pipeline

    final = pipeline.read_final(job_dir)
    if final is not None and (job_dir / pipeline.FINAL_FILE).stat().st_mtime >= started:
        return int(final["exit_code"])
    try:
        out = _finalize_quietly(job_dir, lambda: pipeline.finalize(job_dir, job_exit_code=rc))
    except PerfsanityError as exc:
        progress.event(f"{p['name']}: results pipeline failed: {exc}")
        return rc or 1
    progress.event(f"{p['name']}: collected (junit.xml, gate.json; log {job_dir / FINALIZE_LOG})")
    return out


# ------------------------------------------------------------------------------------------- local


def run_sweep_local(out_dir: Path, manifest: dict[str, Any], jobs: Mapping[str, PreparedJob], *,
                    progress: Progress | None = None) -> int:
    """Run the points one after another on this machine (skipping those that already passed here)."""
    from perfsanity.jobs.local import run_local

    progress = progress or Progress()
    worst = 0
    for p in manifest["points"]:
        if _active(p) or _succeeded(p):  # running in SLURM, or passed already (here or there)
            continue
        job = jobs[p["name"]]
        _archive_attempt(job.job_dir, p)
        job.write()
        start = _now()
        p["attempts"].append({"attempt": len(p["attempts"]) + 1, "job_id": LOCAL_JOB_ID, "submitted": _iso(start),
                              "submitted_epoch": start, "state": "RUNNING", "exit_code": None, "ended": None,
                              "infrastructure_failure": False})
        p.update(job_id=LOCAL_JOB_ID, state="RUNNING", exit_code=None)
        write_manifest(out_dir, manifest)
        progress.event(f"{p['name']}: running locally in {job.job_dir}")
        started = time.time()
        try:
            rc = run_local(job)
        except KeyboardInterrupt:
            rc = 130
        if rc != 130:
            rc = _collect_local(p, job.job_dir, rc, progress, started)
        state = "COMPLETED" if rc == 0 else ("CANCELLED" if rc == 130 else "FAILED")
        p.update(state=state, exit_code=rc, final_exit_code=rc)
        p["attempts"][-1].update(state=state, exit_code=rc, ended=_iso())
        write_manifest(out_dir, manifest)
        progress.event(f"{p['name']}: {state} (exit code {rc})")
        worst = worst or (1 if rc else 0)
        if rc == 130:
            return 130
    return worst


# --------------------------------------------------------------------------------------------- CLI


def default_sweep_dir(sweep: Sweep) -> Path:
    """``$PERFSANITY_OUT/sweep-<name>`` (default ``out/``): the same command resumes the same sweep."""
    return Path(os.environ.get("PERFSANITY_OUT", REPO_ROOT / "out")) / f"sweep-{sweep.source.stem}"


def format_points(manifest: Mapping[str, Any], jobs: Mapping[str, PreparedJob] | None = None) -> str:
    keys = list(manifest.get("parameters") or {})
    headers = ["POINT", *keys, "NODES", "GPUS", "JOB", "STATE"]
    rows = []
    for p in manifest["points"]:
        job = (jobs or {}).get(p["name"])
        rows.append([
            p["name"],
            *(json.dumps(p["parameters"].get(k), default=str) if not isinstance(p["parameters"].get(k), str)
              else p["parameters"][k] for k in keys),
            str(job.topology.total_nodes) if job else "-",
            str(job.topology.total_gpus) if job else "-",
            str(p.get("job_id") or "-"),
            str(p["state"]),
        ])
    return format_table(headers, rows)


def run_sweep(sweep_file: Path | str, out_dir: Path | str | None = None, *, action: str = "dry-run",
              cluster: ClusterDefaults | None = None, fixed_overrides: Mapping[str, Any] | None = None,
              max_jobs: int | None = None, retries: int = 0, wait: bool = False,
              stream: TextIO | None = None) -> int:
    """Expand, validate, write and (``action``: ``dry-run`` | ``submit`` | ``local``) run a sweep."""
    out = stream if stream is not None else sys.stdout
    if action not in ("dry-run", "submit", "local"):
        raise ValueError(f"unknown action {action!r}")
    if max_jobs is not None and max_jobs < 1:
        raise ConfigError(None, "--max-jobs", f"must be >= 1, got {max_jobs}")
    if retries < 0:
        raise ConfigError(None, "--retries", f"must be >= 0, got {retries}")
    sweep = load_sweep(sweep_file, fixed_overrides=fixed_overrides)
    out_dir = Path(out_dir) if out_dir else default_sweep_dir(sweep)
    out_dir = out_dir.resolve()
    validate_points(sweep, out_dir, cluster=cluster)  # nothing written before every point passed
    manifest, resumed = open_sweep_dir(sweep, out_dir, cluster)
    progress = Progress(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(out_dir, manifest)
    if resumed:
        _reset_deleted_points(out_dir, manifest, progress)
    jobs = {p.name: prepare_point(sweep, out_dir, p, cluster=cluster) for p in sweep.points}
    for p in manifest["points"]:
        if p["state"] == NOT_SUBMITTED:  # jobs already submitted keep their dirs as they are
            jobs[p["name"]].write()
    write_manifest(out_dir, manifest)
    print(f"sweep {sweep.source}: {len(sweep.points)} points ({sweep.mode}) of {sweep.base}"
          + (" (resumed)" if resumed else ""), file=out)
    if action == "dry-run":
        print(format_points(manifest, jobs), file=out)
        print(f"wrote {out_dir}/<point>/launch.sh and {out_dir / MANIFEST_FILE}", file=out)
        return 0
    if action == "local":
        rc = run_sweep_local(out_dir, manifest, jobs, progress=progress)
    else:
        rc = submit_sweep(out_dir, manifest, jobs, max_jobs=max_jobs, retries=retries, wait=wait or retries > 0,
                          progress=progress)
    print(format_points(manifest, jobs), file=out)
    print(f"manifest {out_dir / MANIFEST_FILE}", file=out)
    return rc


def run_sweep_cli(args: argparse.Namespace, cluster: ClusterDefaults | None) -> int:
    """``submit.py --sweep FILE --out DIR [--dry-run|--submit|--local] [--max-jobs N] [--retries N]``."""
    if getattr(args, "config", None):
        raise ConfigError(None, "--config", "not used with --sweep (the sweep file names its base config)")
    fixed = parse_set(getattr(args, "set", None) or [])
    if getattr(args, "mode", None):
        fixed["benchmark.mode"] = args.mode
    action = "local" if getattr(args, "local", False) else "submit" if getattr(args, "submit", False) else "dry-run"
    retries = getattr(args, "retries", 0) or 0
    if action != "submit" and (retries or getattr(args, "wait", False)):
        raise ConfigError(None, "--retries", "--retries and --wait need --submit")
    return run_sweep(args.sweep, getattr(args, "out", None), action=action, cluster=cluster, fixed_overrides=fixed,
                     max_jobs=getattr(args, "max_jobs", None), retries=retries, wait=getattr(args, "wait", False))


def build_parser() -> argparse.ArgumentParser:
    """``python -m perfsanity.jobs.sweep FILE ...`` (same options as ``submit.py --sweep``)."""
    p = argparse.ArgumentParser(prog="python -m perfsanity.jobs.sweep",
                                description="Expand a sweep file into one job directory per point and "
                                            "dry-run, submit or run them locally.")
    p.add_argument("sweep", metavar="FILE", help="sweep file, or a test config with a sweep: block")
    p.add_argument("--out", help="sweep directory (default: out/sweep-<file>); the same DIR resumes")
    p.add_argument("--cluster", help="cluster defaults YAML (default: $PERFSANITY_CLUSTER)")
    p.add_argument("--mode", choices=["e2e", "gen_only", "gen_only_no_context"], help="override benchmark.mode")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key in every point")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--dry-run", action="store_true", help="write the job directories and stop (default)")
    what.add_argument("--local", action="store_true", help="run the points one after another on this machine")
    what.add_argument("--submit", action="store_true", help="sbatch the points")
    p.add_argument("--max-jobs", type=int, default=None, help="at most N of the sweep's jobs in SLURM at once")
    p.add_argument("--retries", type=int, default=0,
                   help="wait for the jobs and resubmit a point after an infrastructure failure, up to N times")
    p.add_argument("--wait", action="store_true", help="wait for every job and exit with the sweep's verdict")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from perfsanity.spec.cluster import cluster_from_env_or_arg

    args = build_parser().parse_args(argv)
    return run_main(lambda: run_sweep_cli(args, cluster_from_env_or_arg(args.cluster)),
                    interrupted="interrupted (jobs already submitted keep running; run the same command to resume)")


if __name__ == "__main__":
    sys.exit(main())
