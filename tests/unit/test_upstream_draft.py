"""launch.sh with TensorRT-LLM's draft as ``--draft-launch-sh``: our exports carry upstream's variable contract.

The draft is tests/fixtures/trtllm_draft/slurm_launch_draft.sh, a behavioural stand-in written from the
facts in docs/upstream/trtllm-l0-facts.md §2 (it reads exactly upstream's variables, under ``set -u``,
and starts upstream's srun steps in upstream's order and slices). launch.sh runs as sbatch would, with
stub ``srun`` (argv and environment of every call into files; preflight steps run for real), ``scontrol``,
``scancel`` and ``sleep`` first in PATH, and the real python3 behind a recording wrapper (the precheck
runs perfsanity's preflight). Checked: install, then the preflight, then every GEN/CTX step on the node
slice our topology gives, with our srun task counts, then DISAGG_SERVER and BENCHMARK on node 0; no
variable unset; every role gets its DISAGG_SERVING_TYPE and the per-role pytest command.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import pytest

from perfsanity.plan.launch import role_plan
from perfsanity.spec.config import load_config
from perfsanity.spec.topology import build_topology

REPO = Path(__file__).resolve().parents[2]
DRAFT = REPO / "tests/fixtures/trtllm_draft/slurm_launch_draft.sh"
TREE = REPO / "tests/fixtures/trtllm_tree"
SCRIPTS = REPO / "jenkins/scripts"
NODE = "perf/test_perf_sanity.py::test_e2e"
UPSTREAM_CFG = "gb200_deepseek-r1-fp4_1k1k_con2048_ctx2_dep4_gen1_dep16_eplb0_mtp3_ccb-NIXL"
CASES = {
    # name: (llm src, test id, srun args file, config file the roles load)
    "mocker-ctx2-gen2": (REPO, "disagg_upload-e2e-mocker-ctx2-gen2", "--export=ALL\n",
                         REPO / "test_configs/disagg/perf/mocker-ctx2-gen2.yaml"),
    "upstream-gb200-ctx2-gen1": (TREE, f"disagg_upload-e2e-{UPSTREAM_CFG}",
                                 "--container-image=urm.example/trtllm:x\n--container-mounts=/l:/l\n",
                                 None),
}
PREFIX = """#!/bin/bash
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node=1
export jobWorkspace={ws}
export pytestCommand="LLM_ROOT=/src LLM_MODELS_ROOT=/lustre/models pytest -v --timeout-method=thread"
"""
# every call: its argv and its environment (NUL-separated) into $STUB_CALLS/<ns>.{argv,env}
STUB_SRUN = """#!/bin/bash
stamp=$STUB_CALLS/$(date +%s%N)-$$
env -0 > "$stamp.env.tmp" && mv "$stamp.env.tmp" "$stamp.env"
printf '%s\\0' "$@" > "$stamp.argv.tmp" && mv "$stamp.argv.tmp" "$stamp.argv"  # last: the record is whole
#PREFLIGHT
exit 0
"""
STUB_RECORD = """#!/bin/bash
printf '%s %s\\n' "$(basename "$0")" "$*" >> "$STUB_LOG"
[[ $(basename "$0") == sleep ]] && exec /bin/sleep 0.1  # keeps the start order, not upstream's 5 s
exit 0
"""
PYTHON = f"""#!/bin/bash
exec {shlex.quote(sys.executable)} "$@"
"""


def calls(d: Path) -> list[tuple[list[str], dict[str, str]]]:
    out = []
    for argv in sorted(d.glob("*.argv"), key=lambda p: int(p.stem.split("-")[0])):
        env = dict(item.split("=", 1) for item in argv.with_suffix(".env").read_text().split("\0") if "=" in item)
        out.append((argv.read_text().split("\0")[:-1], env))
    return out


def flag(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name:
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


@pytest.fixture
def stubs(tmp_path: Path, h) -> Path:
    d = tmp_path / "stub-bin"
    d.mkdir()
    (d / "srun").write_text(STUB_SRUN.replace("#PREFLIGHT\n", h.STUB_PREFLIGHT))
    (d / "scontrol").write_text(h.STUB_SCONTROL)
    (d / "python3").write_text(PYTHON)
    (d / "slurm.conf").write_text("# stub\n")
    for name in ("scancel", "sleep"):  # sleep: recorded, not slept (the draft's 5 s pauses)
        (d / name).write_text(STUB_RECORD)
    for p in d.iterdir():
        p.chmod(0o755)
    return d


def render(name: str, tmp_path: Path, h) -> Path:
    """launch.sh of case ``name`` with the stand-in as draft, by submit.py in upstream's form."""
    llm_src, test_id, srun_args, _ = CASES[name]
    ws = tmp_path / "ws"
    (tmp_path / "prefix.sh").write_text(PREFIX.format(nodes=8, ws=ws))
    (tmp_path / "srun_args.txt").write_text(srun_args)
    (tmp_path / "test_list.txt").write_text(f"{NODE}[{test_id}] TIMEOUT (60)\n")
    job = tmp_path / "job"
    argv = ["--llm-src", llm_src, "--test-list", tmp_path / "test_list.txt", "--draft-launch-sh", DRAFT,
            "--launch-sh", job / "launch.sh", "--run-sh", SCRIPTS / "slurm_run.sh",
            "--install-sh", SCRIPTS / "slurm_install.sh", "--script-prefix", tmp_path / "prefix.sh",
            "--srun-args", tmp_path / "srun_args.txt", "--split-group", "1", "--stage-name", "GB200-Perf-1",
            "--cluster-name", "no-such-cluster"]
    res = h.run_submit(argv, cwd=tmp_path, env=h.cli_env())
    assert res.returncode == 0, res.stderr
    h.assert_clean_bash(job / "launch.sh")
    return job


def run(job: Path, tmp_path: Path, h, stubs: Path, **env: str) -> tuple[object, Path, Path]:
    """Run launch.sh as sbatch would: (process, directory of srun call records, stub log)."""
    record = tmp_path / "calls"
    record.mkdir()
    log = tmp_path / "stub.log"
    log.write_text("")
    proc = h.run_launch_sh(job / "launch.sh", stubs, cwd=tmp_path, log=log, home=tmp_path,
                           extra_env={"STUB_CALLS": str(record), "SLURM_CONF": str(stubs / "slurm.conf"),
                                      "SLURM_JOB_NODELIST": "node[0-7]", **env})
    return proc, record, log


def wait_for_calls(record: Path, count: int, timeout_s: float = 20.0) -> None:
    """The draft leaves its worker steps running in the background: wait (bounded) for their records."""
    deadline = time.monotonic() + timeout_s
    while len(list(record.glob("*.argv"))) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout_s:g}s for {count} srun calls, saw {len(list(record.glob('*.argv')))}")
        time.sleep(0.1)


@pytest.mark.parametrize("name", sorted(CASES))
def test_upstream_draft_runs_on_our_launch_sh(name: str, tmp_path: Path, h, stubs: Path) -> None:
    _, test_id, srun_args, config_file = CASES[name]
    ws = tmp_path / "ws"  # jobWorkspace of the prefix
    job = render(name, tmp_path, h)
    proc, record, log = run(job, tmp_path, h, stubs)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "unbound variable" not in out and "Error:" not in out, out
    assert "stand-in draft: benchmark completed" in proc.stdout
    assert "scancel" not in log.read_text()

    config = load_config(calls(record)[0][1]["PERFSANITY_CONFIG"])  # what the roles load
    if config_file is not None:
        assert calls(record)[0][1]["PERFSANITY_CONFIG"] == str(config_file)
    plan = {s.role: s for s in role_plan(config, build_topology(config))}
    wait_for_calls(record, 1 + 2 * len(plan))  # install, a preflight step and a server step per role
    steps = calls(record)
    preflight = [(a, e) for a, e in steps if any(x.startswith("--job-name=preflight-") for x in a)]
    main = [(a, e) for a, e in steps if (a, e) not in preflight]
    # install over the whole allocation first, then the preflight (one step per role), then the roles
    install_argv, install_env = main[0]
    assert install_argv[-1] == str(SCRIPTS / "slurm_install.sh") and flag(install_argv, "-N") is None
    assert steps.index(main[1]) > max(steps.index(p) for p in preflight) > steps.index(main[0])
    assert sorted(flag(a, "--job-name") for a, _ in preflight) == sorted(f"preflight-{r}" for r in plan)
    assert "] preflight passed: " in proc.stdout
    if "--container-image" in srun_args:
        assert all("--container" in a for a, _ in preflight)

    roles = [e["DISAGG_SERVING_TYPE"] for _, e in main[1:]]
    assert roles == list(plan), roles  # our start order: GEN_i, CTX_i, DISAGG_SERVER, BENCHMARK
    hosts = [f"node{i}" for i in range(8)]
    for argv_, env in main[1:]:
        role = env["DISAGG_SERVING_TYPE"]
        step = plan[role]
        assert argv_[-1] == str(SCRIPTS / "slurm_run.sh")
        assert env["pytestCommand"] == f"pytest perf/test_perf_sanity.py::test_e2e[{test_id}]"
        assert env["PERFSANITY_TEST_ID"] == test_id and env["PERFSANITY_JOB_DIR"] == str(job)
        assert int(flag(argv_, "-N")) == len(step.nodes)
        assert int(flag(argv_, "--ntasks")) == step.tasks
        if step.is_worker:  # pinned to the slice our topology gives
            assert flag(argv_, "-w") == ",".join(hosts[n] for n in step.nodes), role
            assert "--mpi=pmix" in argv_
        else:  # the first node of the allocation: where our topology puts the router and the benchmark
            assert step.nodes == (0,) and flag(argv_, "-w") is None and "--overlap" in argv_
    workers = sum(1 for s in plan.values() if s.is_worker)
    assert log.read_text().count("sleep 5\n") == workers + 2  # upstream's pause after every step
    assert (ws / "install.log").is_file()
    assert sorted(p.name for p in (job / "logs").glob("*_server*.log")) == sorted(
        [f"gen_server_{i}.log" for i in range(config.hardware.num_gen_servers)]
        + [f"ctx_server_{i}.log" for i in range(config.num_ctx_servers)] + ["disagg_server.log"])


def test_failed_precheck_ends_upstreams_draft(tmp_path: Path, h, stubs: Path) -> None:
    """run_cache_transceiver_precheck fails (node2 cannot write the job dir): the draft's own
    cleanup_on_failure scancels the job, no server step starts, junit.xml names node and check."""
    from junitparser import JUnitXml

    job = render("mocker-ctx2-gen2", tmp_path, h)
    (job / "preflight/nodes").mkdir(parents=True)
    (job / "preflight/nodes/node2").write_text("")  # a file where node2's preflight directory goes
    proc, record, log = run(job, tmp_path, h, stubs)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Error: perfsanity preflight failed: see " in proc.stdout and "unbound variable" not in out
    assert "scancel 4242" in log.read_text()
    steps = [e.get("DISAGG_SERVING_TYPE") for a, e in calls(record)
             if not any(x.startswith("--job-name=preflight-") for x in a)]
    assert steps == [None]  # the install step only
    cases = [c for suite in JUnitXml.fromfile(str(job / "junit.xml")) for c in suite]
    failed = [c for c in cases if c.name == "PREFLIGHT"]
    assert failed, [c.name for c in cases]
    assert failed[0].result[0].message.startswith("preflight failed: node node2 (CTX_0): job dir writable")
