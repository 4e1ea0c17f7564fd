"""``submit.py``: validate a test config, compute its topology, write the job directory, and then
dry-run, run locally, or sbatch it.

Two front ends:

* **Direct**: ``submit.py --config FILE [--cluster FILE] --out DIR [--dry-run | --local | --submit]``.
* **L0** (TensorRT-LLM's Jenkins flags): ``--run-ci --llm-src --test-list --draft-launch-sh
  --launch-sh --run-sh --install-sh --script-prefix --srun-args`` (the 9-flag form), or upstream's
  current form: the same without ``--run-ci``, plus ``--split-group N`` (which test-list line),
  ``--stage-name`` and ``--cluster-name`` (see :mod:`perfsanity.spec.cluster`).

L0 config lookup (:func:`locate_l0_config`): when ``--llm-src`` is a TensorRT-LLM tree, its
``tests/scripts/perf-sanity/{disaggregated,aggregated}/`` (or ``$DISAGG_CONFIG_FOLDER`` /
``$AGG_CONFIG_FOLDER``) first, then ``<llm-src>/test_configs`` and ours. L0 mode sizes jobs with
upstream's node arithmetic (``hardware.pack: false``) unless the config says ``pack: true``; a
test-list ``TIMEOUT (N)`` bounds the job (the smaller of it and the config's own ``slurm.timeout``).
When what the roles would load from the config file differs from the job's effective config
(upstream format, filled placeholders, the node rule, the bound), the effective config is written
into the job directory and ``PERFSANITY_CONFIG`` points there.

Everything is rendered in memory first; files are written only once every check passed, into a temp
dir renamed into place, so bad input or a failure while writing leaves nothing half written.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from perfsanity.common.errors import ConfigError, PerfsanityError
from perfsanity.common.files import write_atomic
from perfsanity.common.redact import redact, redact_data
from perfsanity.engines import get_backend
from perfsanity.plan.launch import (
    DRAFT_LAUNCH,
    REPO_ROOT,
    LaunchPaths,
    default_srun_args,
    job_exports,
    read_srun_args_file,
    render_launch_sh,
    render_prefix,
    repo_path,
)
from perfsanity.spec import upstream
from perfsanity.spec.benchmark_types import points
from perfsanity.spec.cluster import ClusterDefaults
from perfsanity.spec.config import MAX_TIMEOUT_S, Config, apply_overrides, config_from_dict, load_config
from perfsanity.spec.loader import parse_yaml, read_text, read_yaml
from perfsanity.spec.testlist import TestEntry, TestSelection, parse_test_entries, pytest_command_of, select_entry
from perfsanity.spec.topology import Topology, build_topology

CONFIGS_ROOT = REPO_ROOT / "test_configs"
DEFAULT_CONFIG = CONFIGS_ROOT / "disagg/perf/mocker-ctx1-gen1.yaml"


@dataclass(frozen=True)
class PreparedJob:
    """Everything of one job, rendered but not yet written."""

    config: Config
    config_path: Path
    cluster: ClusterDefaults | None
    topology: Topology
    job_dir: Path
    launch_sh: str
    launch_path: Path
    test_id: str
    env: dict[str, str]  # what launch.sh exports (the local launcher gives roles the same)
    config_text: str | None = None  # effective config YAML to write at config_path (when overrides were given)
    notes: tuple[str, ...] = ()  # said in the summary and job.json (e.g. an unknown --cluster-name)
    l0_info: dict | None = None  # L0 inputs recorded in job.json (split group, stage and cluster name, bound)

    def files(self) -> dict[Path, tuple[str, int | None]]:
        """Every file of the job dir, rendered and redacted: path -> (text, mode). The effective config
        copy is redacted too: a secret reaches the roles from the environment (``HF_TOKEN=${HF_TOKEN}``),
        never from a file the harness wrote."""
        from perfsanity.plan.jobmeta import job_meta  # imports SQLAlchemy: only when a job is written

        out: dict[Path, tuple[str, int | None]] = {}
        if self.config_text is not None:
            out[self.config_path] = (self.config_text, None)
        out[self.launch_path] = (self.launch_sh, 0o755)
        resolved = redact_data(self.config.resolved_dict())
        out[self.job_dir / "config.resolved.yaml"] = (yaml.safe_dump(resolved, sort_keys=False), None)
        out[self.job_dir / "job.json"] = (json.dumps(self.job_info(), indent=2) + "\n", None)
        meta = job_meta(self.config, self.topology, commit=harness_commit())
        out[self.job_dir / "job_meta.json"] = (meta.to_json(), None)
        return {path: (redact(text), mode) for path, (text, mode) in out.items()}

    def write(self) -> None:
        """Write launch.sh, the effective config (if any), config.resolved.yaml, job.json and job_meta.json,
        all redacted: rendered in memory, written into a temp dir, renamed into place. On any failure
        nothing of it is left (see :func:`write_job_dir`)."""
        write_job_dir(self.job_dir, self.files(), subdirs=("logs",))

    def job_info(self) -> dict:
        return {
            "config_name": self.config.name,
            "config_path": str(self.config_path),
            "cluster": self.cluster.source if self.cluster else None,
            "test_id": self.test_id,
            "backend": self.config.metadata.backend,
            "mode": self.config.benchmark.mode,
            "config_hash": config_hash(self.config),
            "harness_commit": harness_commit(),
            "total_nodes": self.topology.total_nodes,
            "total_gpus": self.topology.total_gpus,
            "roles": {p.role: list(p.nodes) for p in self.topology.roles},
            "node_rule": self.topology.rule,
            **({"l0": self.l0_info} if self.l0_info else {}),
            **({"notes": list(self.notes)} if self.notes else {}),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "pipeline": pipeline_settings({**os.environ, **self.env}),
        }

    def summary(self) -> str:
        lines = [
            f"config   {self.config_path}  ({self.config.metadata.backend}, {self.config.benchmark.mode})",
            *([f"from     {self.config.source}"] if self.config.source
              and Path(self.config.source).resolve() != self.config_path.resolve() else []),
            f"test id  {self.test_id}",
            *self.topology.summary_lines(),
            f"job dir  {self.job_dir}",
            f"launch   {self.launch_path}",
            *(f"note     {n}" for n in self.notes),
        ]
        return "\n".join(lines)


def write_job_dir(job_dir: Path, files: Mapping[Path, tuple[str, int | None]], *,
                  subdirs: Sequence[str] = ()) -> None:
    """Write ``files`` (path -> (text, mode)) and the empty ``subdirs`` of ``job_dir`` all or nothing.

    Files under ``job_dir`` are written into a temp dir beside it, which is renamed into place (a job dir
    that already exists gets the files moved in one by one); a file outside it (L0's ``--launch-sh``)
    is written atomically last. Any failure, Ctrl-C included, removes what this call created: the temp
    dir, the files moved in, the job dir and the parent dirs it made."""
    job_dir = Path(job_dir)
    inside = {p: v for p, v in files.items() if p.is_relative_to(job_dir)}
    outside = {p: v for p, v in files.items() if p not in inside}
    made_dirs = [d for d in (job_dir, *job_dir.parents) if not d.exists()]
    created: list[Path] = []
    tmp: Path | None = None
    try:
        job_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{job_dir.name}.", suffix=".tmp", dir=job_dir.parent))
        for path, (text, mode) in inside.items():
            write_atomic(tmp / path.relative_to(job_dir), text, mode=mode)
        for sub in subdirs:
            (tmp / sub).mkdir(parents=True, exist_ok=True)
        if not job_dir.exists():
            tmp.chmod(0o777 & ~_umask())
            tmp.rename(job_dir)
            tmp = None
        else:
            for path in [*inside, *(job_dir / sub for sub in subdirs)]:
                if path.exists() and path.is_dir():
                    continue
                if not path.parent.exists():
                    path.parent.mkdir(parents=True)
                    created.append(path.parent)
                (tmp / path.relative_to(job_dir)).replace(path)
                created.append(path)
        for path, (text, mode) in outside.items():
            if not path.exists():
                created.append(path)
            write_atomic(path, text, mode=mode)
    except BaseException as exc:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir() if path.is_dir() else path.unlink()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for d in made_dirs:  # deepest first
            shutil.rmtree(d, ignore_errors=True) if d == job_dir else _rmdir_quiet(d)
        if isinstance(exc, OSError):
            raise PerfsanityError(f"cannot write the job directory {job_dir}: {exc}") from None
        raise
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _rmdir_quiet(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def pipeline_settings(environ: Mapping[str, str]) -> dict[str, bool]:
    """How the submit side's results pipeline treats this job, fixed when the job is prepared (job.json
    ``pipeline``) so that it never depends on a compute node's environment: ``PERFSANITY_PRE_MERGE=1``
    gates with pre-merge thresholds (a regression fails the job); ``PERFSANITY_RUN_CI=1`` (``--run-ci``)
    records the run as post-merge history (baseline material) and uploads it."""
    run_ci = str(environ.get("PERFSANITY_RUN_CI", "")) == "1"
    return {"pre_merge": str(environ.get("PERFSANITY_PRE_MERGE", "")) == "1", "post_merge": run_ci, "upload": run_ci}


def config_hash(config: Config) -> str:
    data = json.dumps(config.resolved_dict(), sort_keys=True, default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def harness_commit() -> str | None:
    head = REPO_ROOT / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            target = REPO_ROOT / ".git" / ref[5:]
            if target.exists():
                return target.read_text().strip()
            packed = REPO_ROOT / ".git" / "packed-refs"
            for line in packed.read_text().splitlines() if packed.exists() else []:
                if line.endswith(" " + ref[5:]):
                    return line.split()[0]
            return None
        return ref
    except OSError:
        return None


def prepare_direct(
    config_path: Path,
    job_dir: Path,
    *,
    cluster: ClusterDefaults | None = None,
    mode: str | None = None,
    overrides: dict | None = None,
    server: str | None = None,
) -> PreparedJob:
    """One job from a config file. ``server`` picks the case of a TensorRT-LLM aggregated file
    (``server_configs``; optional when it has one server)."""
    if mode:
        overrides = {**(overrides or {}), "benchmark.mode": mode}
    config = load_config(config_path, cluster=cluster, overrides=overrides, server=server)
    check_needed(config, direct=True)
    get_backend(config.metadata.backend).validate(config, str(config_path))  # engine facts, before sbatch
    topology = build_topology(config)
    job_dir = job_dir.resolve()
    config_text = None
    raw = read_yaml(config_path)
    aggregated = upstream.is_aggregated(raw)
    if overrides or aggregated:
        # roles load the config from PERFSANITY_CONFIG: give them the effective one, same name and kind
        # (an upstream aggregated file becomes the one case it was asked for)
        if aggregated:
            _, raw = upstream.aggregated_case(raw, server, config=config_path.stem, source=str(config_path))
        if overrides:
            raw = apply_overrides(raw, overrides, source=str(config_path))
        config_text = yaml.safe_dump(redact_data(raw), sort_keys=False)
        config_path = job_dir / "config" / config.kind / "perf" / f"{config.name}.yaml"
    paths = LaunchPaths(repo=REPO_ROOT, job_dir=job_dir, config=config_path.resolve())
    test_id = config.test_id()
    extra = _cluster_export(cluster)
    text = render_launch_sh(
        config,
        topology,
        paths,
        prefix_text=render_prefix(config, topology, job_dir),
        srun_args=default_srun_args(config, REPO_ROOT),
        draft_text=DRAFT_LAUNCH.read_text(),
        test_id=test_id,
        extra_exports=extra,
    )
    env = job_exports(config, topology, paths, test_id, extra)
    return PreparedJob(config, config_path, cluster, topology, job_dir, text, job_dir / "launch.sh", test_id, env,
                       config_text)


def _cluster_export(cluster: ClusterDefaults | None) -> dict[str, object]:
    if cluster is None:
        return {}
    out: dict[str, object] = {}
    if cluster.source:
        out["PERFSANITY_CLUSTER"] = Path(cluster.source).resolve()
    if cluster.bind_host:
        out["PERFSANITY_HOST"] = cluster.bind_host
    return out


def find_config(name: str, kind: str, roots: Sequence[Path]) -> Path:
    for root in roots:
        path = root / kind / "perf" / f"{name}.yaml"
        if path.is_file():
            return path
    tried = ", ".join(str(r / kind / "perf" / f"{name}.yaml") for r in roots)
    raise ConfigError(None, "", f"no config named {name!r} (looked for {tried})")


def check_needed(config: Config, *, direct: bool) -> None:
    """One error for a ``<...>`` placeholder nothing filled where this job needs the value.

    Needed: ``environment.model_path`` for every backend without a model of its own (all but the mocker);
    in direct mode also the container image and mounts (L0 takes container flags from --srun-args).
    """
    unset = config.unset_placeholders
    backend = get_backend(config.metadata.backend)
    if not backend.has_default_model and not config.environment.model_path:
        config.require("environment.model_path")
    if not backend.uses_job_infra:
        for key, section in (("infra", config.infra), ("frontend", config.frontend)):
            if not section.is_default:
                raise ConfigError(config.source, key, f"backend {backend.name} has no job etcd/NATS or frontends "
                                  "behind nginx; only dynamo-mocker and dynamo-sglang take this section")
    check_wheels(config)
    check_accuracy_and_profiling(config)
    points(config.benchmark, source=config.source)  # a bad trace_file is a submit-time error, not a node's
    if direct:
        if config.container_image is None and "environment.container_image" in unset:
            config.require("environment.container_image")
        if config.container_image and config.container_mounts is None and "environment.container_mount" in unset:
            config.require("environment.container_mount")


def check_accuracy_and_profiling(config: Config) -> None:
    """Submit-time checks: ``accuracy.task_dir`` is a folder (relative: to the repo) holding task YAMLs;
    ``profiling.windows`` needs a backend with torch-profiler endpoints."""
    acc = config.accuracy
    if acc.enable_accuracy_test and acc.task_dir is not None:
        path = repo_path(acc.task_dir)
        if not path.is_dir() or not any(path.glob("*.yaml")):
            raise ConfigError(config.source, "accuracy.task_dir",
                              f"{acc.task_dir!r} ({path}) is not a folder of lm-eval task YAMLs")
    backend = get_backend(config.metadata.backend)
    if config.profiling.windows and backend.profiler_endpoints is None:
        raise ConfigError(config.source, "profiling.windows",
                          f"backend {backend.name} has no torch-profiler HTTP endpoints; its profiler runs over "
                          "profiling.profile_start_iter..profile_stop_iter instead")


def check_wheels(config: Config) -> None:
    """Submit-time check: every ``environment.wheels`` entry is an existing ``.whl`` file."""
    for i, wheel in enumerate(config.environment.wheels):
        path = Path(wheel)
        if path.suffix != ".whl":
            raise ConfigError(config.source, f"environment.wheels[{i}]", f"bad value {wheel!r}: not a .whl file")
        if not path.is_absolute():
            raise ConfigError(config.source, f"environment.wheels[{i}]",
                              f"bad value {wheel!r}: must be an absolute path (every node installs it)")
        if not path.is_file():
            raise ConfigError(config.source, f"environment.wheels[{i}]", f"file not found: {wheel}")


@dataclass(frozen=True)
class L0Case:
    """A test-list id resolved to a file: where it is and how to read it."""

    path: Path
    form: str  # as-is (our format or upstream disaggregated) | upstream-aggr | ctx_only
    name: str  # the case's config name (the id's part after the prefix and mode)
    server: str | None = None  # upstream-aggr: the server_configs entry
    config: str | None = None  # upstream-aggr / ctx_only: the upstream file's stem


def locate_l0_config(sel: TestSelection, llm_src: Path, environ: Mapping[str, str] = os.environ) -> L0Case:
    """Where the test id's config is: upstream's folders first (TensorRT-LLM tree), then test_configs/."""
    candidates: list[L0Case] = []
    if upstream.is_trtllm_tree(llm_src, environ):
        agg, disagg = upstream.config_folders(llm_src, environ)
        if sel.kind == "disagg":
            candidates.append(L0Case(disagg / f"{sel.config_name}.yaml", "as-is", sel.config_name))
        elif sel.ctx_only_config:
            cfg = sel.ctx_only_config
            candidates.append(L0Case(disagg / f"{cfg}.yaml", "ctx_only", sel.config_name, config=cfg))
        else:
            cfg, server = sel.upstream_server  # server None: aggr_upload-<cfg> of a one-server file
            candidates.append(L0Case(agg / f"{cfg}.yaml", "upstream-aggr", sel.config_name, server, cfg))
    roots = [llm_src / "test_configs", CONFIGS_ROOT] if llm_src != REPO_ROOT else [CONFIGS_ROOT]
    for root in roots:
        candidates.append(L0Case(sel.config_path(root), "as-is", sel.config_name))
        if sel.ctx_only_config:
            cfg = sel.ctx_only_config
            candidates.append(L0Case(root / "disagg/perf" / f"{cfg}.yaml", "ctx_only", sel.config_name, config=cfg))
    for case in candidates:
        if case.path.is_file():
            return case
    tried = ", ".join(dict.fromkeys(str(c.path) for c in candidates))
    raise ConfigError(None, "", f"no config named {sel.config_name!r} (looked for {tried})")


def _models_root(prefix: str, environ: Mapping[str, str]) -> str | None:
    """``LLM_MODELS_ROOT``: the leading assignment of the prefix's pytestCommand, else the environment."""
    command = pytest_command_of(prefix) or ""
    m = re.match(r"^(?:\w+=\S*\s+)*?LLM_MODELS_ROOT=(\S+)", command)
    return m.group(1) if m else environ.get("LLM_MODELS_ROOT") or None


def _l0_effective(case: L0Case, sel: TestSelection, entry: TestEntry, cluster: ClusterDefaults | None,
                  prefix: str, environ: Mapping[str, str],
                  overrides: Mapping[str, object] | None = None) -> tuple[Config, dict, Config | None]:
    """(the job's config, its raw form for the roles, what the roles would load from the file itself)."""
    source = str(case.path)
    raw = read_yaml(case.path)
    kind = sel.kind
    if case.form == "upstream-aggr":
        if not upstream.is_aggregated(raw):
            raise ConfigError(source, "server_configs", f"is missing: test aggr_upload-{sel.config_name} names "
                              f"server {case.server!r} of an aggregated config")
        name, raw = upstream.aggregated_case(raw, case.server, config=case.config or "", source=source)
    elif case.form == "ctx_only":
        name, raw = upstream.ctx_only_case(raw, config=case.config or "", source=source)
    else:
        if upstream.is_aggregated(raw):
            raise ConfigError(source, "server_configs", f"test {sel.kind}_upload-{sel.config_name} needs a "
                              "disaggregated config here, not TensorRT-LLM's aggregated format")
        name = case.name
    raw, placeholders = upstream.strip_placeholders(upstream.normalize(raw))
    if overrides:
        raw = apply_overrides(raw, overrides, source=source)
    if sel.mode:
        raw = apply_overrides(raw, {"benchmark.mode": sel.mode}, source=source)
    config = config_from_dict(raw, name=name, kind=kind, source=source, cluster=cluster)
    sets: dict[str, object] = dict(l0_defaults(config))
    if entry.timeout_s is not None:
        if entry.timeout_s > MAX_TIMEOUT_S:
            raise ConfigError(entry.source, "TIMEOUT", f"{entry.timeout_min} minutes exceeds the longest bound, "
                              f"{MAX_TIMEOUT_S // 60} minutes")
        own = config.slurm.timeout if "timeout" in config.slurm.model_fields_set else None
        bound = entry.timeout_s if own is None else min(own, entry.timeout_s)
        if bound != config.slurm.timeout:
            sets["slurm.timeout"] = bound
    if "environment.model_path" in placeholders and not config.environment.model_path:
        root, dir_name = _models_root(prefix, environ), config.metadata.model_dir_name
        if root and dir_name:
            sets["environment.model_path"] = f"{root.rstrip('/')}/{dir_name}"
    if sets:
        raw = apply_overrides(raw, sets, source=source)
        config = config_from_dict(raw, name=name, kind=kind, source=source, cluster=cluster)
    dumped = config.model_dump()
    config._placeholders = {k: v for k, v in placeholders.items() if _value_at(dumped, k) is None}
    roles_view = None
    if case.form == "as-is" and not overrides:
        try:
            roles_view = load_config(case.path, cluster=cluster,
                                     overrides={"benchmark.mode": sel.mode} if sel.mode else None)
        except ConfigError:
            roles_view = None
    return config, raw, roles_view


def l0_defaults(config: Config) -> dict[str, object]:
    """What L0 mode sets where the config leaves it unset: upstream's node arithmetic (no packing)."""
    return {"hardware.pack": False} if config.hardware.pack is None else {}


def _value_at(data: object, dotted: str) -> object:
    for part in dotted.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _same_job(a: Config, b: Config | None) -> bool:
    """Would roles loading ``b`` run the job ``a`` describes (same settings, same topology)?"""
    if b is None or (a.name, a.kind) != (b.name, b.kind):
        return False
    da, db = a.resolved_dict(), b.resolved_dict()
    da["hardware"].pop("pack", None)
    db["hardware"].pop("pack", None)
    return da == db and build_topology(a).roles == build_topology(b).roles


def prepare_l0(args: argparse.Namespace, cluster: ClusterDefaults | None, *,
               notes: Sequence[str] = (), environ: Mapping[str, str] = os.environ,
               finalize_in_job: bool = True) -> PreparedJob:
    """Build launch.sh from TensorRT-LLM's L0 arguments (either flag form).

    ``finalize_in_job``: the job runs the results pipeline as its last step, for L0 flows whose submit
    side is TensorRT-LLM's (our own Jenkins flow collects on the submit side and turns it off)."""
    entries = parse_test_entries(Path(args.test_list))
    split_group = getattr(args, "split_group", None)
    llm_src = Path(args.llm_src).resolve()
    prefix = _read(args.script_prefix, "--script-prefix")
    if split_group is None:
        if len(entries) != 1:
            raise ConfigError(args.test_list, "", f"L0 mode runs one test per job, found {len(entries)}")
        entry = entries[0]
    else:
        entry = select_entry(entries, split_group, source=args.test_list, llm_src=llm_src,
                             pytest_command=environ.get("pytestCommand") or pytest_command_of(prefix))
    sel = entry.selection
    case = locate_l0_config(sel, llm_src, environ)
    overrides = parse_set(getattr(args, "set", None) or [])  # --set works in L0 mode too
    config, raw, roles_view = _l0_effective(case, sel, entry, cluster, prefix, environ, overrides)
    check_needed(config, direct=False)
    get_backend(config.metadata.backend).validate(config, str(case.path))  # engine facts, before sbatch
    topology = build_topology(config)
    launch_path = Path(args.launch_sh).resolve()
    job_dir = Path(args.out).resolve() if args.out else launch_path.parent
    config_path, config_text = case.path, None
    if not _same_job(config, roles_view):
        config_path = job_dir / "config" / config.kind / "perf" / f"{config.name}.yaml"
        config_text = yaml.safe_dump(redact_data(raw), sort_keys=False)
    paths = LaunchPaths(
        # the roles run perfsanity from --llm-src when it is a perfsanity checkout; a TensorRT-LLM tree
        # (configs only) runs them from this one
        repo=llm_src if (llm_src / "perfsanity" / "__init__.py").is_file() else REPO_ROOT,
        job_dir=job_dir,
        config=config_path.resolve(),
        run_sh=Path(args.run_sh).resolve(),
        install_sh=Path(args.install_sh).resolve(),
    )
    draft = _read(args.draft_launch_sh, "--draft-launch-sh")
    try:
        srun_args = read_srun_args_file(Path(args.srun_args))
    except OSError as exc:
        raise ConfigError(args.srun_args, "", f"cannot read --srun-args file: {exc}") from None
    test_id = config.test_id(sel.mode) if sel.kind == "disagg" else config.test_id()
    extra = {**_cluster_export(cluster), **({"PERFSANITY_RUN_CI": 1} if args.run_ci else {}),
             **({"PERFSANITY_FINALIZE_IN_JOB": 1} if finalize_in_job else {})}
    text = render_launch_sh(
        config, topology, paths, prefix_text=prefix, srun_args=srun_args, draft_text=draft,
        test_id=test_id, extra_exports=extra,
    )
    env = job_exports(config, topology, paths, test_id, extra)
    l0_info = {
        "test_list_line": entry.source,
        "split_group": split_group,
        "stage_name": getattr(args, "stage_name", None) or None,
        "cluster_name": getattr(args, "cluster_name", None) or None,
        "timeout_min": entry.timeout_min,
        "config_source": str(case.path),
    }
    return PreparedJob(config, config_path, cluster, topology, job_dir, text, launch_path, test_id, env,
                       config_text, tuple(notes), l0_info)


def _read(path: str, flag: str) -> str:
    try:
        return read_text(path)
    except ConfigError as exc:
        raise ConfigError(path, "", f"cannot read {flag} file: {exc.message}") from None


def parse_set(items: Sequence[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(None, "--set", f"{item!r} is not KEY=VALUE")
        out[key] = parse_yaml(value, None, what=f"--set {key}") if value else ""
    return out


def default_out_dir(config_path: Path) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(os.environ.get("PERFSANITY_OUT", REPO_ROOT / "out")) / f"{config_path.stem}-{stamp}"
