"""``submit.py``: validate a test config, compute its topology, write the job directory, and then
dry-run, run locally, or sbatch it.

Two front ends:

* **Direct**: ``submit.py --config FILE [--cluster FILE] --out DIR [--dry-run | --local | --submit]``.
* **L0** (TensorRT-LLM's Jenkins flags): ``--run-ci --llm-src --test-list --draft-launch-sh
  --launch-sh --run-sh --install-sh --script-prefix --srun-args``.

Everything is rendered in memory first; files are written only once every check passed, so bad
input leaves nothing half written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from perfsanity.common.errors import ConfigError, PerfsanityError
from perfsanity.common.files import write_atomic
from perfsanity.common.redact import redact_data
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
)
from perfsanity.spec.cluster import ClusterDefaults
from perfsanity.spec.config import Config, apply_overrides, load_config, read_yaml
from perfsanity.spec.testlist import parse_test_list
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

    def write(self) -> None:
        """Write launch.sh, config.resolved.yaml (redacted) and job.json."""
        resolved = redact_data(self.config.resolved_dict())
        try:
            self.job_dir.mkdir(parents=True, exist_ok=True)
            (self.job_dir / "logs").mkdir(exist_ok=True)
            if self.config_text is not None:
                write_atomic(self.config_path, self.config_text)
            write_atomic(self.launch_path, self.launch_sh, mode=0o755)
            write_atomic(self.job_dir / "config.resolved.yaml", yaml.safe_dump(resolved, sort_keys=False))
            write_atomic(self.job_dir / "job.json", json.dumps(self.job_info(), indent=2) + "\n")
            from perfsanity.plan.jobmeta import job_meta  # imports SQLAlchemy: only when a job is written

            meta = job_meta(self.config, self.topology, commit=harness_commit())
            write_atomic(self.job_dir / "job_meta.json", meta.model_dump_json(indent=2) + "\n")
        except OSError as exc:
            raise PerfsanityError(f"cannot write the job directory {self.job_dir}: {exc}") from None

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
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "pipeline": pipeline_settings({**os.environ, **self.env}),
        }

    def summary(self) -> str:
        lines = [
            f"config   {self.config_path}  ({self.config.metadata.backend}, {self.config.benchmark.mode})",
            f"test id  {self.test_id}",
            *self.topology.summary_lines(),
            f"job dir  {self.job_dir}",
            f"launch   {self.launch_path}",
        ]
        return "\n".join(lines)


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
) -> PreparedJob:
    if mode:
        overrides = {**(overrides or {}), "benchmark.mode": mode}
    config = load_config(config_path, cluster=cluster, overrides=overrides)
    get_backend(config.metadata.backend).validate(config, str(config_path))  # engine facts, before sbatch
    topology = build_topology(config)
    job_dir = job_dir.resolve()
    config_text = None
    if overrides:
        # roles load the config from PERFSANITY_CONFIG: give them the effective one, same name and kind
        raw = apply_overrides(read_yaml(config_path), overrides, source=str(config_path))
        config_text = yaml.safe_dump(raw, sort_keys=False)
        config_path = job_dir / "config" / config.kind / "perf" / config_path.name
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


def prepare_l0(args: argparse.Namespace, cluster: ClusterDefaults | None, *,
               finalize_in_job: bool = True) -> PreparedJob:
    """Build launch.sh from TensorRT-LLM's nine L0 arguments.

    ``finalize_in_job``: the job runs the results pipeline as its last step, for L0 flows whose submit
    side is TensorRT-LLM's (our own Jenkins flow collects on the submit side and turns it off)."""
    selections = parse_test_list(Path(args.test_list))
    if len(selections) != 1:
        raise ConfigError(args.test_list, "", f"L0 mode runs one test per job, found {len(selections)}")
    sel = selections[0]
    llm_src = Path(args.llm_src).resolve()
    roots = [llm_src / "test_configs", CONFIGS_ROOT] if llm_src != REPO_ROOT else [CONFIGS_ROOT]
    config_path = find_config(sel.config_name, sel.kind, roots)
    overrides = {"benchmark.mode": sel.mode} if sel.mode else None
    config = load_config(config_path, cluster=cluster, overrides=overrides)
    get_backend(config.metadata.backend).validate(config, str(config_path))  # engine facts, before sbatch
    topology = build_topology(config)
    launch_path = Path(args.launch_sh).resolve()
    job_dir = Path(args.out).resolve() if args.out else launch_path.parent
    paths = LaunchPaths(
        repo=llm_src,
        job_dir=job_dir,
        config=config_path.resolve(),
        run_sh=Path(args.run_sh).resolve(),
        install_sh=Path(args.install_sh).resolve(),
    )
    prefix = _read(args.script_prefix, "--script-prefix")
    draft = _read(args.draft_launch_sh, "--draft-launch-sh")
    try:
        srun_args = read_srun_args_file(Path(args.srun_args))
    except OSError as exc:
        raise ConfigError(args.srun_args, "", f"cannot read --srun-args file: {exc}") from None
    test_id = config.test_id(sel.mode) if sel.kind == "disagg" else config.test_id()
    extra = {**_cluster_export(cluster), **({"PERFSANITY_RUN_CI": 1} if args.run_ci else {}), **({"PERFSANITY_FINALIZE_IN_JOB": 1} if finalize_in_job else {})}
    text = render_launch_sh(
        config, topology, paths, prefix_text=prefix, srun_args=srun_args, draft_text=draft,
        test_id=test_id, extra_exports=extra,
    )
    env = job_exports(config, topology, paths, test_id, extra)
    return PreparedJob(config, config_path, cluster, topology, job_dir, text, launch_path, test_id, env)


def _read(path: str, flag: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read {flag} file: {exc}") from None


def parse_set(items: Sequence[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(None, "--set", f"{item!r} is not KEY=VALUE")
        try:
            out[key] = yaml.safe_load(value) if value else ""
        except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as exc:
            problem = getattr(exc, "problem", None) or " ".join(str(exc).split())[:160] or "invalid YAML"
            raise ConfigError(None, f"--set {key}", f"value {value[:80]!r} is not valid YAML: {problem}") from None
    return out


def default_out_dir(config_path: Path) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(os.environ.get("PERFSANITY_OUT", REPO_ROOT / "out")) / f"{config_path.stem}-{stamp}"
