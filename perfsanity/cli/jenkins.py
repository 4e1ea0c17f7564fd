"""The Jenkins side of the L0 flow (``jenkins/scripts/perf/run_perf_test.sh`` calls this):

write the test-list / script-prefix / srun-args files → ``submit.py`` L0 mode → sbatch → track the job
(bounded, streaming its log) → collect: the results pipeline runs here, on the Jenkins agent (record,
gate, junit.xml, report; :func:`perfsanity.jobs.submit.collect_job`) → exit with the final verdict.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from perfsanity.common.errors import PerfsanityError
from perfsanity.plan.launch import DRAFT_LAUNCH, INSTALL_SH, REPO_ROOT, RUN_SH, default_srun_args, render_prefix
from perfsanity.plan.prepare import CONFIGS_ROOT, find_config, l0_defaults, locate_l0_config, prepare_direct
from perfsanity.spec.testlist import parse_test_id

TRACK_MARGIN_S = 600


def write_inputs(ws: Path, test_id: str, *, partition: str | None, account: str | None,
                 container_image: str | None, container_mounts: str | None, cluster: str | None) -> dict[str, Path]:
    """The files Jenkins hands to submit.py in L0 mode, rendered as direct mode renders them (same
    #SBATCH checks, same container flags), with the Jenkins parameters as config overrides."""
    from perfsanity.spec.cluster import cluster_from_env_or_arg

    sel = parse_test_id(test_id)
    # the file the L0 lookup will use ($DISAGG_CONFIG_FOLDER first), when it is in our format
    case = locate_l0_config(sel, REPO_ROOT)
    config_path = case.path if case.form == "as-is" else find_config(sel.config_name, sel.kind, [CONFIGS_ROOT])
    given = {"slurm.partition": partition, "slurm.account": account,
             "slurm.container_image": container_image, "slurm.container_mounts": container_mounts}
    overrides = {k: v for k, v in given.items() if v}
    defaults = cluster_from_env_or_arg(cluster)
    plan = prepare_direct(config_path, ws / "plan", cluster=defaults, mode=sel.mode, overrides=overrides or None)
    if l0 := l0_defaults(plan.config):  # sized as the L0 plan will be (upstream's node rule unless pack: true)
        plan = prepare_direct(config_path, ws / "plan", cluster=defaults, mode=sel.mode,
                              overrides={**overrides, **l0})
    files = {
        "test_list": ws / "test_list.txt",
        "script_prefix": ws / "script_prefix.sh",
        "srun_args": ws / "srun_args.txt",
    }
    files["test_list"].write_text(f"perf/test_perf_sanity.py::test_e2e[{test_id}]\n")
    files["script_prefix"].write_text(render_prefix(plan.config, plan.topology, ws))
    args = default_srun_args(plan.config, REPO_ROOT)
    files["srun_args"].write_text("".join(a + "\n" for a in args))
    return files


STAGES = ("validate", "submit", "track", "collect", "all")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="run_perf_test.sh", description=__doc__)
    p.add_argument("--stage", choices=STAGES, default="all",
                   help="validate: dry-run only; submit: sbatch and write jobid.json; track: wait for the job "
                   "streaming its log; collect: run the results pipeline (gate, junit.xml, report, history); all: every stage (default)")
    p.add_argument("--test", required=True, help="test id, e.g. disagg_upload-e2e-mocker-ctx1-gen1")
    p.add_argument("--workspace", required=True, type=Path, help="where launch.sh, logs, junit and results go")
    p.add_argument("--cluster", help="cluster defaults YAML")
    p.add_argument("--partition")
    p.add_argument("--account")
    p.add_argument("--container-image")
    p.add_argument("--container-mounts")
    p.add_argument("--upload", action="store_true", help="record results as post-merge (--run-ci)")
    p.add_argument("--timeout", type=float, help="bound on tracking the job (default: slurm.timeout + 600 s)")
    args = p.parse_args(argv)
    args.workspace = args.workspace.resolve()
    try:
        if args.stage in ("validate", "all", "submit"):
            prepare(args)
        if args.stage == "validate":
            return 0
        if args.stage in ("submit", "all"):
            stage_submit(args)
        if args.stage == "submit":
            return 0
        verdict = stage_track(args) if args.stage in ("track", "all") else 0
        if args.stage in ("collect", "all"):
            verdict = stage_collect(args)
        return verdict
    except PerfsanityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def prepare(args: argparse.Namespace):  # noqa: ANN201 - PreparedJob
    """Write the L0 input files and launch.sh into the workspace (validates the config)."""
    from perfsanity.cli.submit import build_parser
    from perfsanity.plan.prepare import prepare_l0
    from perfsanity.spec.cluster import cluster_from_env_or_arg

    ws = args.workspace
    ws.mkdir(parents=True, exist_ok=True)
    files = write_inputs(ws, args.test, partition=args.partition, account=args.account,
                         container_image=args.container_image, container_mounts=args.container_mounts,
                         cluster=args.cluster)
    l0_argv = ["--llm-src", str(REPO_ROOT), "--test-list", str(files["test_list"]),
               "--draft-launch-sh", str(DRAFT_LAUNCH), "--launch-sh", str(ws / "launch.sh"),
               "--run-sh", str(RUN_SH), "--install-sh", str(INSTALL_SH),
               "--script-prefix", str(files["script_prefix"]), "--srun-args", str(files["srun_args"])]
    if args.upload:
        l0_argv.insert(0, "--run-ci")
    job = prepare_l0(build_parser().parse_args(l0_argv), cluster_from_env_or_arg(args.cluster), finalize_in_job=False)
    job.write()
    print(job.summary(), flush=True)
    return job


def stage_submit(args: argparse.Namespace) -> str:
    from perfsanity.jobs.slurm import submit

    ws = args.workspace
    job_id = submit(ws / "launch.sh", workdir=ws)
    info = json.loads((ws / "job.json").read_text())
    (ws / "jobid.json").write_text(json.dumps({**info, "job_id": job_id}, indent=2) + "\n")
    print(f"[submit] job {job_id}", flush=True)
    return job_id


def _job_id(ws: Path) -> str:
    try:
        return str(json.loads((ws / "jobid.json").read_text())["job_id"])
    except (OSError, ValueError, KeyError):
        raise PerfsanityError(f"{ws / 'jobid.json'}: no job id; run the submit stage first") from None


def stage_track(args: argparse.Namespace) -> int:
    from perfsanity.jobs.slurm import cancel, job_state, wait_for_job
    from perfsanity.spec.config import load_config

    ws = args.workspace
    job_id = _job_id(ws)
    info = json.loads((ws / "jobid.json").read_text())
    timeout = args.timeout or load_config(info["config_path"]).slurm.timeout + TRACK_MARGIN_S
    try:
        final = wait_for_job(job_id, timeout_s=timeout, poll_s=2.0, stream_log=ws / f"slurm-{job_id}.out",
                             on_poll=_state_printer())
    except PerfsanityError as exc:
        print(f"[track] {exc}; cancelling job {job_id}", flush=True)
        cancel(job_id)
        final = job_state(job_id)
    info.update(state=final.state, exit_code=final.exit_code, exit_signal=final.exit_signal, nodelist=final.nodelist)
    (ws / "jobid.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"[track] job {job_id}: {final.state}, exit code {final.exit_code}", flush=True)
    return 0 if final.succeeded else 1


def stage_collect(args: argparse.Namespace) -> int:
    """The results pipeline on this (the submit) side: record, gate, junit.xml, report — also for a job
    that was cancelled, timed out or never tracked to its end (then junit.xml names why)."""
    from perfsanity.jobs.submit import collect_job
    from perfsanity.results.pipeline import finalize

    ws = args.workspace
    try:
        verdict = collect_job(ws)
    except PerfsanityError as exc:  # no job id, or a job that has not ended: still leave Jenkins a junit
        print(f"[collect] {exc}", flush=True)
        verdict = finalize(ws, job_exit_code=1, reason=f"cannot collect the job: {exc}")
    print(f"[collect] junit {ws / 'junit.xml'}; results {ws / 'results.json'}; verdict {verdict}", flush=True)
    return verdict


def _state_printer():
    last = {"state": None}

    def show(info) -> None:  # noqa: ANN001
        if info.state != last["state"]:
            print(f"[track] job {info.job_id}: {info.state}", flush=True)
            last["state"] = info.state

    return show


if __name__ == "__main__":
    sys.exit(main())
