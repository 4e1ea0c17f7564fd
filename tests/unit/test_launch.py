"""perfsanity.plan.launch: launch.sh rendering. Golden files pin L0-mode launch.sh of three configs and the srun
steps they start; injection tests run a rendered launch.sh with stub ``srun``/``scontrol`` (the real supervisor,
``perfsanity.jobs.batch``, in between) and check that config strings stay data.

``PERFSANITY_UPDATE_GOLDEN=1 pytest tests/unit/test_launch.py`` rewrites the golden files.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from perfsanity.common.errors import ConfigError
from perfsanity.plan.launch import (
    CONTAINER_ENV,
    LaunchPaths,
    default_srun_args,
    has_container_args,
    job_exports,
    read_srun_args_file,
    render_launch_sh,
    render_prefix,
    render_srun_args,
)
from perfsanity.spec.config import config_from_dict, load_config
from perfsanity.spec.topology import build_topology

REPO = Path(__file__).resolve().parents[2]
ROOT = REPO / "test_configs"
GOLDEN = Path(__file__).resolve().parent / "golden"
MOCKER = ROOT / "disagg/perf/mocker-ctx1-gen1.yaml"
UPDATE = os.environ.get("PERFSANITY_UPDATE_GOLDEN") == "1"


def mocker_raw() -> dict:
    import yaml

    return yaml.safe_load(MOCKER.read_text())


# launch.sh asks ``python3 perfsanity/bootstrap.py`` for the venv's interpreter: the stub python3 records its
# argv and runs the real one
PYTHON_PASSTHROUGH = f"""#!/bin/bash
# one write per call: preflight tasks run python3 beside the stub srun, which logs to the same file
line=python3; for a in "$@"; do line+=" [$a]"; done
printf '%s\\n' "$line" >> "$STUB_LOG"
exec {shlex.quote(sys.executable)} "$@"
"""


@pytest.fixture
def stub_bin(stub_bin: Path, h) -> Path:
    """conftest's stub srun and scontrol, a real python3 behind a
    recording wrapper, and a slurm.conf for the host list expansion (``scontrol show hostnames`` is only
    asked when one exists)."""
    (stub_bin / "python3").write_text(PYTHON_PASSTHROUGH)
    (stub_bin / "slurm.conf").write_text("# stub\n")
    return stub_bin


def run_launch_sh(h, launch: Path, stub_bin: Path, **kw) -> object:
    extra = {"SLURM_CONF": str(stub_bin / "slurm.conf"), **kw.pop("extra_env", {})}
    return h.run_launch_sh(launch, stub_bin, extra_env=extra, **kw)


def srun_steps(calls: str) -> list[str]:
    """The stub srun's log as ``ROLE: srun ARGV`` lines (the golden srun_*.txt format)."""
    out = []
    for line in calls.splitlines():
        if line.startswith("srun "):
            body, role = line.rsplit(" role=", 1)
            args = re.findall(r"\[(.*?)\](?= \[|$)", body[len("srun "):])
            label = "preflight" if any(a.startswith("--job-name=preflight-") for a in args) else role or "install"
            out.append(f"{label}: " + shlex.join(["srun", *args]))
    return out


# ---- pieces -------------------------------------------------------------------------------


def test_container_env_only_with_container_image() -> None:
    with_container = render_srun_args(["--container-image=img", "--container-mounts=/a:/a,/b:/b"])
    assert "'--container-env=" + ",".join(CONTAINER_ENV) + "'" in with_container
    without = render_srun_args(["--mpi=pmix", "--export=ALL"])
    assert "--container-env" not in without
    assert render_srun_args([]) == "srunArgs=(\n)\n"


def test_srun_args_are_quoted() -> None:
    text = render_srun_args(["--container-mounts=/a:/a,/b:/b", "it's", "$(touch X)", "a b"])
    assert "    '--container-mounts=/a:/a,/b:/b'\n" in text
    assert "    '$(touch X)'\n" in text
    assert "    'a b'\n" in text
    assert "it'\"'\"'s" in text


def test_has_container_args() -> None:
    assert has_container_args(["--container-image=x"])
    assert has_container_args(["--mpi=pmix", "--container-image", "x"])
    assert not has_container_args(["--container-mounts=/a:/a"])


def test_read_srun_args_file(tmp_path: Path) -> None:
    p = tmp_path / "args"
    p.write_text("# comment\n\n  --container-image=img  \n--mpi=pmix\n")
    assert read_srun_args_file(p) == ["--container-image=img", "--mpi=pmix"]


def test_default_srun_args() -> None:
    raw = mocker_raw()
    assert default_srun_args(config_from_dict(raw, name="t"), REPO) == []
    raw["slurm"]["container_image"] = "img:1"
    raw["slurm"]["container_mounts"] = "/a:/a"
    assert default_srun_args(config_from_dict(raw, name="t"), REPO) == [
        "--container-image=img:1", "--container-mounts=/a:/a", f"--container-workdir={REPO}",
        "--no-container-mount-home"]


def test_render_prefix() -> None:
    raw = mocker_raw()
    raw["slurm"].update(partition="batch", account="perf", extra_args="--exclusive --constraint=gb200")
    config = config_from_dict(raw, name="t")
    text = render_prefix(config, build_topology(config), Path("/jobs/j1"))
    assert text.splitlines() == [
        "#!/bin/bash",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --job-name=perfsanity-mocker",
        "#SBATCH --time=00:20:00",
        "#SBATCH --partition=batch",
        "#SBATCH --account=perf",
        "#SBATCH --gres=gpu:4",
        "#SBATCH --output=/jobs/j1/slurm-%j.out",
        "#SBATCH --exclusive",
        "#SBATCH --constraint=gb200",
    ]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("job_name", "my job"),
        ("job_name", "x$(touch X)"),
        ("job_name", "x`id`"),
        ("job_name", "x\n"),
        ("job_name", "a;b"),
        ("partition", "batch\n#SBATCH --x"),
        ("account", "a'b"),
        ("extra_args", "--comment=$(id)"),
        ("job_time", "01:00:00\n"),
    ],
)
def test_unsafe_sbatch_values_rejected(key: str, value: str) -> None:
    raw = mocker_raw()
    raw["slurm"][key] = value
    with pytest.raises(ConfigError) as info:  # control characters already at load, the rest when rendering
        config = config_from_dict(raw, name="t", source="t.yaml")
        render_prefix(config, build_topology(config), Path("/jobs/j1"))
    assert info.value.key_path == f"slurm.{key}"
    assert info.value.file == "t.yaml"
    assert "\n" not in str(info.value)


def test_job_exports_match_topology(tmp_path: Path) -> None:
    config = load_config(ROOT / "disagg/perf/gb200-deepseek-r1-fp4_1k1k_ctx2_dep4_gen1_dep16_mtp3.yaml")
    topo = build_topology(config)
    paths = LaunchPaths(repo=REPO, job_dir=tmp_path, config=MOCKER)
    env = job_exports(config, topo, paths, "disagg_upload-e2e-x", {"EXTRA": 1})
    assert env["numGenServers"] == "1" and env["numCtxServers"] == "2" and env["numServers"] == "0"
    assert env["totalNodes"] == "6" and env["totalGpus"] == "24"
    assert env["genGpusPerServer"] == "16" and env["genNodesPerServer"] == "4"
    assert env["ctxGpusPerServer"] == "4" and env["ctxNodesPerServer"] == "1"
    assert env["PERFSANITY_SRUN_MPI"] == "pmix" and env["EXTRA"] == "1"
    assert env["pytestCommand"] == "pytest perf/test_perf_sanity.py::test_e2e[disagg_upload-e2e-x]"
    text = render_launch_sh(config, topo, paths, prefix_text="#SBATCH --nodes=6", srun_args=[],
                            draft_text="echo draft\n", test_id="disagg_upload-e2e-x")
    assert text.startswith("#!/bin/bash\n#SBATCH --nodes=6\n")
    assert "roleNames=(GEN_0 CTX_0 CTX_1 DISAGG_SERVER BENCHMARK)\n" in text
    assert "roleNodes=('0 1 2 3' 4 5 0 0)\n" in text
    assert "roleTasks=(16 4 4 1 1)\n" in text  # trtllm: one rank per GPU
    assert text.endswith("echo draft\n")


# ---- golden files (L0 mode, real CLI) ------------------------------------------------------

PREFIX_TEMPLATE = """#!/bin/bash
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node=4
#SBATCH --time=02:00:00
#SBATCH --partition=batch
#SBATCH --account=perf
#SBATCH --job-name=perf-sanity-l0
#SBATCH --output=/home/svc/jobs/slurm-%j.out
export jobWorkspace=/home/svc/jobs/ws
export llmSrcNode=/home/svc/jobs/ws/TensorRT-LLM
"""
SRUN_CONTAINER = """# container job
--container-image=urm.nvidia.com/sw-tensorrt-docker/tensorrt-llm:pytorch-25.10-py3-x86_64
--container-workdir=/home/svc/jobs/ws
--container-mounts=/home/svc/jobs/ws:/home/svc/jobs/ws,/lustre/models:/models
--mpi=pmix
"""
SRUN_PLAIN = """--export=ALL
--cpu-bind=none
"""
GOLDEN_CASES = {
    # name: (test id in the list, test id exported (mode filled in), nodes, srun args, container?)
    "trtllm-dsr1-1k1k": ("disagg_upload-e2e-gb200-deepseek-r1-fp4_1k1k_ctx2_dep4_gen1_dep16_mtp3",
                         "disagg_upload-e2e-gb200-deepseek-r1-fp4_1k1k_ctx2_dep4_gen1_dep16_mtp3", 6,
                         SRUN_CONTAINER, True),
    "sglang-glm47-4p2d": ("disagg_upload-gen_only-gb200-glm-4.7-nvfp4_1k1k_sglang_4p2d",
                          "disagg_upload-gen_only-gb200-glm-4.7-nvfp4_1k1k_sglang_4p2d", 8, SRUN_CONTAINER, True),
    "mocker-ctx1-gen1": ("disagg_upload-mocker-ctx1-gen1", "disagg_upload-e2e-mocker-ctx1-gen1", 1, SRUN_PLAIN, False),
}


def l0_args(tmp_path: Path, test_id: str, nodes: int, srun_args: str) -> list[str]:
    (tmp_path / "prefix.sh").write_text(PREFIX_TEMPLATE.format(nodes=nodes))
    (tmp_path / "srun_args.txt").write_text(srun_args)
    (tmp_path / "test_list.txt").write_text(f"perf/test_perf_sanity.py::test_e2e[{test_id}] TIMEOUT (120)\n")
    scripts = REPO / "jenkins/scripts"
    return [
        "--run-ci",
        "--llm-src", str(REPO),
        "--test-list", str(tmp_path / "test_list.txt"),
        "--draft-launch-sh", str(scripts / "perf/disaggregated/slurm_launch_draft.sh"),
        "--launch-sh", str(tmp_path / "job/launch.sh"),
        "--run-sh", str(scripts / "slurm_run.sh"),
        "--install-sh", str(scripts / "slurm_install.sh"),
        "--script-prefix", str(tmp_path / "prefix.sh"),
        "--srun-args", str(tmp_path / "srun_args.txt"),
    ]


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_l0_launch_sh_golden(name: str, tmp_path: Path, h) -> None:
    listed_id, test_id, nodes, srun_args, container = GOLDEN_CASES[name]
    res = h.run_submit(l0_args(tmp_path, listed_id, nodes, srun_args), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    launch = tmp_path / "job/launch.sh"
    h.assert_clean_bash(launch)
    text = launch.read_text()
    assert ("--container-env=" in text) == container
    assert f"export PERFSANITY_TEST_ID={test_id}\n" in text
    assert "export PERFSANITY_RUN_CI=1\n" in text
    assert f"#SBATCH --nodes={nodes}\n" in text
    assert (tmp_path / "job/config.resolved.yaml").is_file()
    info = json.loads((tmp_path / "job/job.json").read_text())
    assert info["test_id"] == test_id and info["total_nodes"] == nodes

    got = h.normalise(text, {str(REPO): "<REPO>", str(tmp_path): "<TMP>"})
    assert str(tmp_path) not in got
    golden = GOLDEN / f"l0_{name}.launch.sh"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        golden.write_text(got)
    assert golden.is_file(), f"missing {golden}; run with PERFSANITY_UPDATE_GOLDEN=1"
    want = golden.read_text()
    if got != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True), str(golden), "rendered"))
        pytest.fail(f"launch.sh differs from {golden.name} (PERFSANITY_UPDATE_GOLDEN=1 to accept):\n{diff}")


@pytest.mark.slow  # seconds each: a real engine/tool process or many subprocesses
@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_l0_launch_sh_starts_the_golden_srun_steps(name: str, tmp_path: Path, h, stub_bin: Path) -> None:
    """The L0 launch.sh, run as sbatch would (stub srun/scontrol): the supervisor starts the install step
    and one srun step per role with exactly the argv of srun_l0_<name>.txt (which the bash draft started)."""
    listed_id, _, nodes, srun_args, _ = GOLDEN_CASES[name]
    res = h.run_submit(l0_args(tmp_path, listed_id, nodes, srun_args), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    log = tmp_path / "argv.log"
    proc = run_launch_sh(h, tmp_path / "job/launch.sh", stub_bin, cwd=tmp_path, log=log, home=tmp_path)
    # the stub steps exit 0 but no BENCHMARK wrote results.json: the supervisor's verdict is 0, and the
    # in-job results pipeline (L0) turns the missing results into a failure
    assert "] done: exit code 0" in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == 1, proc.stdout + proc.stderr
    calls = log.read_text()
    # the draft asks the bootstrap for the harness venv's interpreter, then execs the supervisor under it
    assert f"python3 [{REPO}/perfsanity/bootstrap.py] [--print-python]" in calls
    got = [h.normalise(line, {str(REPO): "<REPO>", str(tmp_path): "<TMP>"}) for line in srun_steps(calls)]
    golden = GOLDEN / f"srun_l0_{name}.txt"
    logged = [h.normalise(line.split("] run: ", 1)[1], {str(REPO): "<REPO>", str(tmp_path): "<TMP>"})
              for line in proc.stdout.splitlines() if "] run: " in line]
    if UPDATE:  # in the supervisor's start order
        golden.write_text("".join(
            (line.split("=", 1)[1].replace(" ", ": ", 1) if line.startswith("DISAGG_SERVING_TYPE=")
             else ("preflight: " if "--job-name=preflight-" in line else "install: ") + line) + "\n"
            for line in logged))
    want = golden.read_text().splitlines()
    assert sorted(got) == sorted(want)  # the stub steps run at once: their log lines come in any order
    # the supervisor logged each step it started, in the golden order, with its full command
    assert logged == [f"DISAGG_SERVING_TYPE={line.replace(': ', ' ', 1)}"
                      if not line.startswith(("install: ", "preflight: ")) else line.split(": ", 1)[1] for line in want]
    # L0 (PERFSANITY_FINALIZE_IN_JOB=1): the job runs the results pipeline itself; no benchmark ran, so
    # its junit.xml names the missing results
    assert "export PERFSANITY_FINALIZE_IN_JOB=1\n" in (tmp_path / "job/launch.sh").read_text()
    junit = (tmp_path / "job/junit.xml").read_text()
    assert "BENCHMARK" in junit and "results.json" in junit, junit


# ---- injection -----------------------------------------------------------------------------

INJECT_CONFIG = """
metadata:
  model_name: "m$(touch {m})`touch {m}`'\\";touch {m} | #second line"
  precision: "$(touch {m})"
  model_dir_name: "`touch {m}`"
  benchmark_type: "1k1k; touch {m}"
  supported_gpus: ["$(touch {m})"]
  backend: dynamo-mocker
  engine_keys_unchecked: [note]  # not a dynamo.mocker option: carries a payload into the worker argv
slurm:
  job_name: injection-test
  job_time: "00:10:00"
  mpi: "pmix$(touch {m})`touch {m}`"
  container_image: "img$(touch {m})`touch {m}`;x'\\""
  container_mounts: "/a:/b,$(touch {m}):/c | #;touch {m} '\\"`touch {m}`"
hardware:
  gpus_per_node: 4
  num_ctx_servers: 1
  num_gen_servers: 1
environment:
  worker_env_var: 'A="$(touch {m})" B=''`touch {m}`'' C="x;touch {m}" D="line1 | #line2"'
  server_env_var: 'E="$(touch {m})"'
  model_path: "/models/$(touch {m}) | #`touch {m}`"
  work_dir: "/w/'\\"$(touch {m})"
accuracy:
  model_args_extra: "x=$(touch {m})"
benchmark:
  dataset_file: "$(touch {m}).json"
worker_config:
  ctx: {{tensor_parallel_size: 2, note: "$(touch {m})"}}
  gen: {{tensor_parallel_size: 2, note: "`touch {m}`"}}
"""


MARKER_NAMES = {"PWNED", "PWNED_DIR", "PWNED_JOB"}


def markers(root: Path) -> list[Path]:
    """Files a command substitution would have created, anywhere under ``root``."""
    return [p for p in root.rglob("*") if p.name in MARKER_NAMES]


def lint_and_run_inert(h, launch: Path, stub_bin: Path, tmp_path: Path):
    """Check ``launch`` with ``bash -n`` and shellcheck, run it with the stub SLURM commands in a fresh
    run dir and home; (the finished process, the stubs' argv log)."""
    # SC2016 ("expressions don't expand in single quotes") is exactly what is intended here
    h.assert_clean_bash(launch, exclude=["SC2016"])
    run_dir, home, log = tmp_path / "run", tmp_path / "home", tmp_path / "argv.log"
    run_dir.mkdir()
    home.mkdir()
    proc = run_launch_sh(h, launch, stub_bin, cwd=run_dir, log=log, home=home)
    return proc, log.read_text() if log.exists() else ""


def test_injection_direct_mode_runs_inert(tmp_path: Path, h, stub_bin: Path) -> None:
    marker = tmp_path / "PWNED"
    # the config sits in a directory whose name is itself a command substitution
    cfg_dir = tmp_path / "cfg $(touch PWNED_DIR) `touch PWNED_DIR`"
    cfg_dir.mkdir()
    cfg = cfg_dir / "inject.yaml"
    cfg.write_text(INJECT_CONFIG.format(m=marker))
    job = tmp_path / "job"
    res = h.run_submit(["--config", cfg, "--out", job, "--dry-run"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    proc, calls = lint_and_run_inert(h, job / "launch.sh", stub_bin, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # a preflight step per role, then install + GEN_0 + CTX_0 + DISAGG_SERVER + BENCHMARK
    assert calls.count("srun ") == 9 and calls.count("--job-name=preflight-") == 4
    assert "scontrol [show] [hostnames] [node[0-63]]" in calls
    # the strings arrived as literal arguments
    assert f"[--container-image=img$(touch {marker})`touch {marker}`;x'\"]" in calls
    assert f"[--mpi=pmix$(touch {marker})`touch {marker}`]" in calls
    assert f"[--container-mounts=/a:/b,$(touch {marker}):/c" in calls
    assert "role=BENCHMARK" in calls
    assert not markers(tmp_path), markers(tmp_path)
    assert not markers(REPO)
    # the saved config keeps the strings as data
    resolved = (job / "config.resolved.yaml").read_text()
    assert "touch" in resolved


def test_injection_l0_mode_runs_inert(tmp_path: Path, h, stub_bin: Path) -> None:
    marker = tmp_path / "PWNED"
    srun_args = (f"--container-image=img$(touch {marker})\n--container-mounts=/a:/a,`touch {marker}`:/b\n"
                 f"--comment=x;touch {marker}\n--comment='\"$(touch {marker})\n")
    args = l0_args(tmp_path, "disagg_upload-e2e-mocker-ctx1-gen1", 1, srun_args)
    job = tmp_path / "jobs $(touch PWNED_JOB) `touch PWNED_JOB`"
    args[args.index("--launch-sh") + 1] = str(job / "launch.sh")
    res = h.run_submit(args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    proc, calls = lint_and_run_inert(h, job / "launch.sh", stub_bin, tmp_path)
    # stub steps write no results.json, so the in-job results pipeline (L0) fails the job: exit 1, not a crash
    assert "] done: exit code 0" in proc.stdout and proc.returncode == 1, proc.stdout + proc.stderr
    assert f"[--container-image=img$(touch {marker})]" in calls
    assert f"[--comment='\"$(touch {marker})]" in calls
    assert (job / "logs").is_dir()
    assert not markers(tmp_path), markers(tmp_path)


# ---- the bash scripts -------------------------------------------------------------------------


def test_draft_is_thin_glue() -> None:
    """The draft only sets up the environment and hands over to the Python supervisor."""
    text = (REPO / "jenkins/scripts/perf/disaggregated/slurm_launch_draft.sh").read_text()
    code = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(code) <= 7, code
    assert code[-2] == 'py=$(python3 "$PERFSANITY_REPO/perfsanity/bootstrap.py" --print-python) || exit 1'
    assert code[-1].startswith('exec "$py" -m perfsanity.jobs.batch --job-dir "$PERFSANITY_JOB_DIR" -- ')


@pytest.mark.parametrize("script", ["jenkins/scripts/slurm_run.sh", "jenkins/scripts/slurm_install.sh",
                                    "jenkins/scripts/perf/disaggregated/slurm_launch_draft.sh",
                                    "jenkins/scripts/perf/disaggregated/slurm_preflight.sh",
                                    "tests/fixtures/trtllm_draft/slurm_launch_draft.sh"])
def test_bash_scripts_are_clean(script: str, h) -> None:
    path = REPO / script
    # the drafts and the preflight are fragments: what they read is defined by the generated part above them
    fragment = "draft" in script or "preflight" in script
    h.assert_clean_bash(path, exclude=["SC2154", "SC2153"] if fragment else [])


@pytest.fixture(scope="module")
def mocker_launch(tmp_path_factory, h) -> Path:
    """launch.sh of the mocker config, written once by a real direct-mode dry run."""
    job = tmp_path_factory.mktemp("mocker") / "job"
    res = h.run_submit(["--config", MOCKER, "--out", job, "--dry-run"])
    assert res.returncode == 0, res.stderr
    return job / "launch.sh"


@pytest.mark.parametrize(("fail", "rc", "needle"), [
    ("", 0, "BENCHMARK finished with exit code 0"),
    ("BENCHMARK", 3, "BENCHMARK finished with exit code 3"),
    ("GEN_0", 1, "GEN_0 failed with exit code 3"),
    ("install", 1, "install step failed"),
    # the four roles share node0: the first of their tasks to report names the failure
    ("preflight", 1, "preflight failed: node node0 (*): job dir writable: cannot write"),
])
def test_launch_sh_verdict_with_stub_srun(fail: str, rc: int, needle: str, tmp_path: Path, h, stub_bin: Path,
                                         mocker_launch: Path) -> None:
    log = tmp_path / "argv.log"
    broken = mocker_launch.parent / "preflight/nodes/node0"
    if fail == "preflight":  # a file where node0's preflight directory goes: node0 cannot write the job dir
        broken.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(broken, ignore_errors=True)
        broken.write_text("")
    proc = run_launch_sh(h, mocker_launch, stub_bin, cwd=tmp_path, log=log, home=tmp_path,
                         extra_env={"STUB_FAIL_ROLE": fail})
    assert proc.returncode == rc, proc.stdout + proc.stderr
    pattern = re.escape(needle).replace(re.escape("(*)"), r"\((GEN_0|CTX_0|DISAGG_SERVER|BENCHMARK)\)")
    assert re.search(pattern, proc.stdout), proc.stdout
    assert f"done: exit code {rc}" in proc.stdout
    calls = log.read_text()
    # the preflight ran first, beside the install step: one real report per role's node, and no role before both
    assert "--job-name=preflight-GEN_0" in calls and "--job-name=install" in calls
    if fail == "preflight":
        assert "role=GEN_0" not in calls
        job_dir = mocker_launch.parent
        failed = json.loads((job_dir / "rendezvous/PREFLIGHT.failed").read_text())
        assert re.match(pattern, failed["message"]), failed["message"]
        report = json.loads((job_dir / "report.json").read_text())
        assert report["failed_role"] == "PREFLIGHT" and "node node0" in report["reason"]
        (job_dir / "preflight/nodes/node0").unlink()  # the module's other cases share this job dir
        (job_dir / "rendezvous/PREFLIGHT.failed").unlink()
        return
    assert "] preflight passed: 4 task(s) on 1 node(s) [node0]; skipped: GPUs visible (backend dynamo-mocker" \
        in proc.stdout, proc.stdout
    if fail != "install":
        assert max(calls.index("--job-name=preflight-GEN_0"), calls.index("--job-name=install")) < calls.index("role=GEN_0")
    # the triage (report.json + its printed report) runs when the supervisor ends the job, not on a
    # benchmark verdict (the benchmark reports its own failure)
    triaged = "=== perfsanity triage: "
    if fail == "install":
        assert "role=GEN_0" not in calls
        assert triaged + "install step failed with exit code 3" in proc.stdout
    else:
        assert all(f"role={r}" in calls for r in ("GEN_0", "CTX_0", "DISAGG_SERVER", "BENCHMARK"))
    if fail == "GEN_0":
        assert triaged + "GEN_0 failed with exit code 3" in proc.stdout
    if fail in ("", "BENCHMARK"):
        assert triaged not in proc.stdout
