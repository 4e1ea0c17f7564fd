"""``submit.py``'s command line: direct mode (--dry-run / --local / --submit / --sweep) and L0 mode
(TensorRT-LLM's Jenkins flags). Argument parsing and dispatch only; the work is in
:mod:`perfsanity.plan.prepare` (job directory) and :mod:`perfsanity.jobs` (running it).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from perfsanity.common.cliutil import run_main
from perfsanity.common.errors import ConfigError
from perfsanity.load import get_client
from perfsanity.load.base import check_benchmark_type
from perfsanity.plan.launch import REPO_ROOT
from perfsanity.plan.prepare import (
    CONFIGS_ROOT,
    DEFAULT_CONFIG,
    default_out_dir,
    parse_set,
    prepare_direct,
    prepare_l0,
)
from perfsanity.run.job import client_name
from perfsanity.spec.cluster import ClusterDefaults, cluster_from_env_or_arg, find_cluster, load_cluster

L0_FLAGS = ("llm_src", "test_list", "draft_launch_sh", "launch_sh", "run_sh", "install_sh", "script_prefix", "srun_args")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="submit.py",
        description="Validate a perf test config, write its job directory (launch.sh, resolved config) "
        "and dry-run it, run it on this machine (--local) or sbatch it (--submit).",
    )
    direct = p.add_argument_group("direct mode")
    direct.add_argument("--config", help=f"test config YAML (default: {DEFAULT_CONFIG.relative_to(REPO_ROOT)})")
    direct.add_argument("--cluster", help="cluster defaults YAML (default: $PERFSANITY_CLUSTER)")
    direct.add_argument("--out", help="job directory (default: out/<config>-<timestamp>)")
    direct.add_argument("--server", metavar="NAME",
                        help="the server_configs entry of a TensorRT-LLM aggregated config to run")
    direct.add_argument("--mode", choices=["e2e", "gen_only", "gen_only_no_context"], help="override benchmark.mode")
    direct.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set benchmark.concurrency_list='1 8' (repeatable)")
    what = direct.add_mutually_exclusive_group()
    what.add_argument("--dry-run", action="store_true", help="write the job directory and stop (default)")
    what.add_argument("--local", action="store_true", help="run every role as a local process, no SLURM")
    what.add_argument("--submit", action="store_true", help="sbatch launch.sh and write jobid.json")
    direct.add_argument("--sweep", metavar="FILE", help="expand a sweep file into one job per point (docs/sweeps.md)")
    direct.add_argument("--max-jobs", type=int, default=None, help="with --sweep: submit at most N points")
    direct.add_argument("--retries", type=int, default=0,
                        help="with --sweep --submit: resubmit a point after an infrastructure failure (NODE_FAIL…)")
    direct.add_argument("--wait", action="store_true", help="with --submit: wait for the job and exit with its verdict")
    l0 = p.add_argument_group("L0 mode (TensorRT-LLM Jenkins flags: the 9-flag form with --run-ci, or "
                              "upstream's current form without it, with --split-group/--stage-name/--cluster-name)")
    l0.add_argument("--run-ci", action="store_true", help="running in CI: record results as post-merge")
    l0.add_argument("--split-group", type=int, default=None, metavar="N",
                    help="1-indexed group: which test-list line this job runs (pytest-split least_duration "
                    "when pytestCommand has --splits/--group); 0: the first line")
    l0.add_argument("--stage-name", default="", help="Jenkins stage name (recorded in job.json)")
    l0.add_argument("--cluster-name", default="",
                    help="cluster defaults by name (test_configs/clusters/NAME.yaml); an unknown name "
                    "proceeds without cluster defaults and says so")
    l0.add_argument("--llm-src", help="source checkout the job runs from")
    l0.add_argument("--test-list", help="file with one perf/test_perf_sanity.py::test_e2e[...] line")
    l0.add_argument("--draft-launch-sh", help="draft launch logic appended to launch.sh")
    l0.add_argument("--launch-sh", help="where to write launch.sh")
    l0.add_argument("--run-sh", help="per-role run script (slurm_run.sh)")
    l0.add_argument("--install-sh", help="per-node install script (slurm_install.sh)")
    l0.add_argument("--script-prefix", help="file with the #SBATCH lines and exports")
    l0.add_argument("--srun-args", help="file with srun arguments, one per line")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_main(lambda: _run(args, parser))


def l0_cluster(args: argparse.Namespace) -> tuple[ClusterDefaults | None, list[str]]:
    """--cluster / $PERFSANITY_CLUSTER, else --cluster-name looked up by name; (cluster, notes)."""
    cluster = cluster_from_env_or_arg(args.cluster)
    if cluster is not None or not args.cluster_name:
        return cluster, []
    dirs = [CONFIGS_ROOT / "clusters"]
    llm_clusters = Path(args.llm_src).resolve() / "test_configs" / "clusters"
    if llm_clusters not in dirs:
        dirs.insert(0, llm_clusters)
    found = find_cluster(args.cluster_name, dirs)
    if found is None:
        return None, [f"--cluster-name {args.cluster_name!r}: no cluster defaults file of that name "
                      f"(looked in {', '.join(str(d) for d in dirs)}); proceeding without cluster defaults"]
    return load_cluster(found), [f"--cluster-name {args.cluster_name!r}: cluster defaults {found}"]


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    l0_given = [f for f in L0_FLAGS if getattr(args, f)]
    if l0_given:
        missing = [f"--{f.replace('_', '-')}" for f in L0_FLAGS if not getattr(args, f)]
        if missing:
            parser.error(f"L0 mode needs all nine flags; missing {' '.join(missing)}")
        cluster, notes = l0_cluster(args)
        job = prepare_l0(args, cluster, notes=notes)
        job.write()
        print(job.summary())
        return 0
    for flag in ("split_group", "stage_name", "cluster_name"):
        if getattr(args, flag) not in (None, ""):
            parser.error(f"--{flag.replace('_', '-')} is an L0 flag; it needs --llm-src, --test-list, ...")
    cluster = cluster_from_env_or_arg(args.cluster)
    if args.sweep:
        from perfsanity.jobs.sweep import run_sweep_cli

        return run_sweep_cli(args, cluster)
    if args.config == "":
        raise ConfigError(None, "--config", "is empty: name a config file (or leave --config out for the default)")
    config_path = Path(args.config) if args.config is not None else DEFAULT_CONFIG
    out = Path(args.out) if args.out else default_out_dir(config_path)
    job = prepare_direct(config_path, out, cluster=cluster, mode=args.mode, overrides=parse_set(args.set) or None,
                         server=args.server)
    # before anything is written
    check_benchmark_type(get_client(client_name(job.config)), job.config.benchmark.type, source=job.config.source)
    job.write()
    print(job.summary())
    if args.local:
        from perfsanity.jobs.local import run_local

        return run_local(job)
    if args.submit:
        from perfsanity.jobs.submit import submit_job

        return submit_job(job, wait=args.wait)
    return 0


