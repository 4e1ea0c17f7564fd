"""In-allocation entry point: what launch.sh's draft fragment execs inside the SLURM batch job.

``python3 -m perfsanity.jobs.batch --job-dir DIR -- SRUN_ARGS...`` runs the job's supervisor
(:mod:`perfsanity.run.supervisor`) with srun steps. The plan comes from the job's config
(``PERFSANITY_CONFIG``, the mode from ``PERFSANITY_TEST_ID``, cluster defaults from
``PERFSANITY_CLUSTER``) and its topology, the same way the roles build theirs; the srun args are
launch.sh's ``srunArgs``. The exit code is the supervisor's verdict.

``--preflight-only`` runs just the allocation check and the preflight (:mod:`perfsanity.run.preflight`):
launch.sh's ``run_cache_transceiver_precheck``, which TensorRT-LLM's own draft calls.

Only when launch.sh exports ``PERFSANITY_FINALIZE_IN_JOB=1`` (L0 mode: TensorRT-LLM owns the submit
side) does the job then run the results pipeline itself and exit with its result.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from perfsanity.common.errors import PerfsanityError
from perfsanity.engines import get_backend
from perfsanity.plan.launch import has_container_args, role_plan
from perfsanity.run.preflight import PreflightPlan, plan_for
from perfsanity.run.spawners import SrunSpawner
from perfsanity.run.supervisor import RunContext, Supervisor
from perfsanity.run.supervisor import run as supervise
from perfsanity.spec.cluster import cluster_from_env_or_arg
from perfsanity.spec.config import Config, load_config
from perfsanity.spec.testlist import parse_test_id
from perfsanity.spec.topology import Topology, build_topology

NEEDED = ("PERFSANITY_CONFIG", "PERFSANITY_TEST_ID", "PERFSANITY_RUN_SH", "PERFSANITY_INSTALL_SH")


def batch_context(job_dir: Path, environ: Mapping[str, str], srun_args: Sequence[str] = ()) -> RunContext:
    """The run context of this job from launch.sh's environment (raises PerfsanityError)."""
    missing = [k for k in NEEDED if not environ.get(k)]
    if missing:
        raise PerfsanityError(f"environment lacks {', '.join(missing)} (set by launch.sh)")
    test_id = environ["PERFSANITY_TEST_ID"]
    sel = parse_test_id(test_id)
    overrides = {"benchmark.mode": sel.mode} if sel.mode else None
    config = load_config(environ["PERFSANITY_CONFIG"], cluster=cluster_from_env_or_arg(None, environ),
                         overrides=overrides)
    try:
        restarts = int(environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        raise PerfsanityError(f"SLURM_RESTART_COUNT={environ['SLURM_RESTART_COUNT']!r} is not a number") from None
    topology = build_topology(config)
    return RunContext.from_config(config, topology, job_dir, test_id=test_id,
                                  job_id=environ.get("SLURM_JOB_ID") or "?", restart_count=restarts,
                                  preflight=preflight_plan(config, topology, srun_args))


def preflight_plan(config: Config, topology: Topology, srun_args: Sequence[str]) -> PreflightPlan | None:
    """The job's preflight (None when ``preflight.enabled`` is false): one step per role of its plan."""
    if not config.preflight.enabled:
        return None
    return plan_for(role_plan(config, topology), timeout_s=config.preflight.timeout_s,
                    container=has_container_args(srun_args),
                    needs_gpu=get_backend(config.metadata.backend).needs_gpu, backend=config.metadata.backend)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m perfsanity.jobs.batch", description=__doc__.splitlines()[0])
    p.add_argument("--job-dir", type=Path, required=True)
    p.add_argument("--preflight-only", action="store_true",
                   help="run only the preflight (launch.sh's run_cache_transceiver_precheck)")
    p.add_argument("srun_args", nargs="*", help="after --: launch.sh's srunArgs, given to every srun step")
    args = p.parse_args(argv)
    env = dict(os.environ if environ is None else environ)
    job_dir = args.job_dir.resolve()
    try:
        ctx = batch_context(job_dir, env, args.srun_args)
    except PerfsanityError as exc:
        print(f"[launch] error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    spawner = SrunSpawner(job_dir, srun_args=args.srun_args, run_sh=env["PERFSANITY_RUN_SH"],
                          install_sh=env["PERFSANITY_INSTALL_SH"], environ=env)
    if args.preflight_only:
        if ctx.preflight is None:
            print("[launch] preflight: off (preflight.enabled: false)", flush=True)
            return 0
        verdict = Supervisor(ctx, spawner).run_preflight_only()
        if verdict == 0:
            return 0
    else:
        verdict = supervise(ctx, spawner)
    if env.get("PERFSANITY_FINALIZE_IN_JOB") == "1":
        from perfsanity.results.pipeline import finalize

        return finalize(job_dir, job_exit_code=verdict)
    return verdict


if __name__ == "__main__":
    sys.exit(main())
