"""``submit.py`` as a real subprocess: direct dry-run of every shipped config (bash -n + shellcheck clean),
L0 mode with each test-list form, and bad input → exit 2 with one stderr line and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

# the session fixtures below run ~30 submit.py subprocesses: on one pytest-xdist worker they run once
pytestmark = pytest.mark.xdist_group("submit-cli")

REPO = Path(__file__).resolve().parents[2]
ROOT = REPO / "test_configs"
CONFIGS = sorted(ROOT.glob("*/perf/*.yaml"))
EXAMPLE_CLUSTER = ROOT / "clusters/example-gb200.yaml"
MOCKER = ROOT / "disagg/perf/mocker-ctx1-gen1.yaml"
# every config without a cluster file; two also with the example cluster (container image + mounts)
CASES = [(cfg, "plain") for cfg in CONFIGS] + [
    (ROOT / "disagg/perf/gb200-deepseek-r1-fp4_1k1k_ctx2_dep4_gen1_dep16_mtp3.yaml", "cluster"),
    (MOCKER, "cluster"),
]


@pytest.fixture(scope="session")
def dry_runs(tmp_path_factory, h) -> dict:
    """Every config × variant, dry-run once per session (2 subprocesses at a time)."""
    base = tmp_path_factory.mktemp("dry")
    keys, arg_lists = [], []
    for cfg, variant in CASES:
        out = base / f"{cfg.stem}-{variant}"
        args = ["--config", cfg, "--out", out, "--dry-run"]
        if variant == "cluster":
            args += ["--cluster", EXAMPLE_CLUSTER]
        keys.append((cfg.stem, variant))
        arg_lists.append(args)
    results = h.run_many(arg_lists)
    return {k: (r, base / f"{k[0]}-{k[1]}") for k, r in zip(keys, results, strict=True)}


@pytest.mark.parametrize(("cfg", "variant"), CASES, ids=[f"{c.stem}-{v}" for c, v in CASES])
def test_dry_run_every_config(cfg: Path, variant: str, dry_runs: dict, h) -> None:
    res, out = dry_runs[(cfg.stem, variant)]
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    launch = out / "launch.sh"
    assert launch.is_file() and launch.stat().st_mode & 0o111
    n = h.bash_n(launch)
    assert n.returncode == 0, n.stderr
    sc = h.shellcheck(launch)
    assert sc.returncode == 0 and sc.stdout == "", sc.stdout
    text = launch.read_text()
    assert text.startswith("#!/bin/bash\n#SBATCH --nodes=")
    assert ("--container-env=" in text) == (variant == "cluster")
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert resolved["name"] == cfg.stem
    info = json.loads((out / "job.json").read_text())
    assert info["config_name"] == cfg.stem
    assert info["test_id"].endswith(cfg.stem)
    assert f"export PERFSANITY_TEST_ID={info['test_id']}\n" in text
    assert f"export totalNodes={info['total_nodes']}\n" in text
    assert f"#SBATCH --nodes={info['total_nodes']}\n" in text
    assert info["cluster"] == (str(EXAMPLE_CLUSTER) if variant == "cluster" else None)
    assert (out / "logs").is_dir()
    assert f"test id  {info['test_id']}" in res.stdout


# ---- L0 mode: the four test-list forms ------------------------------------------------------

L0_FORMS = [
    ("disagg_upload-e2e-mocker-ctx2-gen2", "disagg_upload-e2e-mocker-ctx2-gen2"),
    ("disagg_upload-gen_only-mocker-ctx2-gen2", "disagg_upload-gen_only-mocker-ctx2-gen2"),
    ("disagg_upload-mocker-ctx2-gen2", "disagg_upload-e2e-mocker-ctx2-gen2"),
    ("aggr_upload-b200-llama-3.3-70b-fp8_1k1k_tp4x2", "aggr_upload-b200-llama-3.3-70b-fp8_1k1k_tp4x2"),
]


def l0_argv(tmp_path: Path, test_list_text: str, *, srun_args: str = "--export=ALL\n") -> list:
    (tmp_path / "prefix.sh").write_text("#!/bin/bash\n#SBATCH --nodes=4\n#SBATCH --job-name=l0\n")
    (tmp_path / "srun_args.txt").write_text(srun_args)
    (tmp_path / "test_list.txt").write_text(test_list_text)
    scripts = REPO / "jenkins/scripts"
    return ["--run-ci", "--llm-src", REPO, "--test-list", tmp_path / "test_list.txt",
            "--draft-launch-sh", scripts / "perf/disaggregated/slurm_launch_draft.sh",
            "--launch-sh", tmp_path / "job/launch.sh", "--run-sh", scripts / "slurm_run.sh",
            "--install-sh", scripts / "slurm_install.sh", "--script-prefix", tmp_path / "prefix.sh",
            "--srun-args", tmp_path / "srun_args.txt"]


@pytest.fixture(scope="session")
def l0_runs(tmp_path_factory, h) -> dict:
    dirs, arg_lists = {}, []
    for listed, _ in L0_FORMS:
        d = tmp_path_factory.mktemp("l0")
        dirs[listed] = d
        arg_lists.append(l0_argv(d, f"perf/test_perf_sanity.py::test_e2e[{listed}] TIMEOUT (120)\n"))
    results = h.run_many(arg_lists)
    return {listed: (res, dirs[listed]) for (listed, _), res in zip(L0_FORMS, results, strict=True)}


@pytest.mark.parametrize(("listed", "exported"), L0_FORMS)
def test_l0_test_list_forms(listed: str, exported: str, l0_runs: dict, h) -> None:
    res, d = l0_runs[listed]
    assert res.returncode == 0, res.stderr
    launch = d / "job/launch.sh"
    assert h.bash_n(launch).returncode == 0
    sc = h.shellcheck(launch)
    assert sc.returncode == 0 and not sc.stdout, sc.stdout
    text = launch.read_text()
    assert text.startswith("#!/bin/bash\n#SBATCH --nodes=4\n#SBATCH --job-name=l0\n")
    assert f"export PERFSANITY_TEST_ID={exported}\n" in text
    assert f"export PERFSANITY_REPO={REPO}\n" in text
    assert f"export PERFSANITY_JOB_DIR={d / 'job'}\n" in text
    assert "--container-env" not in text
    assert "    '--export=ALL'\n" in text
    assert (d / "job/config.resolved.yaml").is_file()
    assert json.loads((d / "job/job.json").read_text())["test_id"] == exported
    if "gen_only" in listed:
        assert json.loads((d / "job/job.json").read_text())["mode"] == "gen_only"


# ---- bad input: exit 2, one stderr line, nothing written ------------------------------------


def mutated(tmp_path: Path, old: str, new: str, name: str = "bad-config.yaml") -> Path:
    text = MOCKER.read_text()
    assert old in text
    p = tmp_path / name
    p.write_text(text.replace(old, new))
    return p


BAD_CASES = {
    "typo": (("concurrency_list:", "concurency_list:"), ["benchmark.concurency_list", "did you mean 'concurrency_list'"]),
    "top-typo": (("benchmark:", "benchmarks:"), ["benchmarks", "did you mean 'benchmark'"]),
    "wrong-type": (("gpus_per_node: 4", "gpus_per_node: four"), ["hardware.gpus_per_node", "'four'"]),
    "huge": (("multi_round: 8", "multi_round: " + "9" * 100), ["benchmark.multi_round"]),
    "huger-than-python-parses": (("multi_round: 8", "multi_round: " + "9" * 5000), ["line 28", "'multi_round'"]),
    "bad-date": (("benchmark_type: 128i32o", "benchmark_type: 2024-13-45"), ["line 8", "'benchmark_type'"]),
    "tp6-on-4": (("  gen:\n    tensor_parallel_size: 2", "  gen:\n    tensor_parallel_size: 6"),
                 ["worker_config.gen.tensor_parallel_size", "gpus_per_node=4"]),
    "unsafe-job-name": (("job_name: perfsanity-mocker", 'job_name: "a b$(touch X)"'), ["slurm.job_name"]),
    "duplicate-key": (("timeouts:", "benchmark: {}\ntimeouts:"), ["duplicate key 'benchmark'"]),
    "invalid-yaml": (("hardware:", "hardware: [\n"), ["invalid YAML"]),
    "non-mapping": (("metadata:", "- metadata:"), []),
    "env-injection-name": (("worker_env_var: DYN_LOG=info", "worker_env_var: '$(touch X)=1'"),
                           ["environment.worker_env_var"]),
}


@pytest.fixture(scope="session")
def bad_runs(tmp_path_factory, h) -> dict:
    base = tmp_path_factory.mktemp("bad")
    cases, arg_lists = {}, []
    for name, ((old, new), _) in BAD_CASES.items():
        d = base / name
        d.mkdir()
        cfg = mutated(d, old, new)
        cases[name] = (cfg, d / "out")
        arg_lists.append(["--config", cfg, "--out", d / "out", "--dry-run"])
    return {name: (res, *cases[name]) for name, res in zip(cases, h.run_many(arg_lists, cwd=base), strict=True)}


@pytest.mark.parametrize("name", sorted(BAD_CASES))
def test_bad_config_one_line(name: str, bad_runs: dict, h) -> None:
    res, cfg, out = bad_runs[name]
    h.assert_one_line_error(res, str(cfg), *BAD_CASES[name][1])
    assert res.stderr.startswith("error: ")
    h.assert_nothing_written(out)
    assert not (cfg.parent / "X").exists()


def test_errors_in_l0_mode(tmp_path: Path, h) -> None:
    line = "perf/test_perf_sanity.py::test_e2e[disagg_upload-e2e-no-such-config] TIMEOUT (120)\n"
    res = h.run_submit(l0_argv(tmp_path, line), cwd=tmp_path)
    h.assert_one_line_error(res, "no config named 'no-such-config'")
    h.assert_nothing_written(tmp_path / "job")
    res = h.run_submit(l0_argv(tmp_path, "garbage line\n"), cwd=tmp_path)
    h.assert_one_line_error(res, str(tmp_path / "test_list.txt"), "line 1")
    two = line.replace("no-such-config", "mocker-ctx1-gen1") * 2
    res = h.run_submit(l0_argv(tmp_path, two), cwd=tmp_path)
    h.assert_one_line_error(res, "one test per job, found 2")
    argv = l0_argv(tmp_path, line.replace("no-such-config", "mocker-ctx1-gen1"))
    argv[argv.index("--srun-args") + 1] = tmp_path / "missing.txt"
    res = h.run_submit(argv, cwd=tmp_path)
    h.assert_one_line_error(res, "--srun-args")
    h.assert_nothing_written(tmp_path / "job")


def test_l0_needs_all_flags(tmp_path: Path, h) -> None:
    res = h.run_submit(["--llm-src", REPO, "--test-list", tmp_path / "x"], cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "missing --draft-launch-sh" in res.stderr


def test_other_bad_input(tmp_path: Path, h) -> None:
    out = tmp_path / "out"
    res = h.run_submit(["--config", tmp_path / "nope.yaml", "--out", out], cwd=tmp_path)
    h.assert_one_line_error(res, "nope.yaml", "file not found")
    res = h.run_submit(["--config", MOCKER, "--out", out, "--set", "benchmark.mode=[unclosed"], cwd=tmp_path)
    h.assert_one_line_error(res, "--set benchmark.mode")
    res = h.run_submit(["--config", MOCKER, "--out", out, "--set", "worker_config.gen.x=" + "9" * 5000], cwd=tmp_path)
    h.assert_one_line_error(res, "--set worker_config.gen.x")
    res = h.run_submit(["--config", MOCKER, "--out", out, "--set", "benchmark.concurency_list=1"], cwd=tmp_path)
    h.assert_one_line_error(res, "benchmark.concurency_list", "did you mean")
    res = h.run_submit(["--config", MOCKER, "--out", out, "--cluster", tmp_path / "nope.yaml"], cwd=tmp_path)
    h.assert_one_line_error(res, "nope.yaml")
    h.assert_nothing_written(out)


def test_unwritable_out_is_one_line(tmp_path: Path, h) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    res = h.run_submit(["--config", MOCKER, "--out", blocker / "job"], cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr_lines) == 1
    assert "cannot write the job directory" in res.stderr


def test_set_and_mode_overrides(tmp_path: Path, h) -> None:
    out = tmp_path / "out"
    res = h.run_submit(["--config", MOCKER, "--out", out, "--mode", "gen_only",
                        "--set", "benchmark.concurrency_list=2 4"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert resolved["benchmark"]["concurrency_list"] == [2, 4]
    assert resolved["benchmark"]["mode"] == "gen_only"
    assert "export PERFSANITY_TEST_ID=disagg_upload-gen_only-mocker-ctx1-gen1\n" in (out / "launch.sh").read_text()


def test_secrets_redacted_in_resolved_config(tmp_path: Path, h) -> None:
    cfg = mutated(tmp_path, "worker_env_var: DYN_LOG=info",
                  "worker_env_var: DYN_LOG=info HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz", "secret-config.yaml")
    out = tmp_path / "out"
    res = h.run_submit(["--config", cfg, "--out", out], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    saved = (out / "config.resolved.yaml").read_text()
    assert "hf_abcdefghijklmnopqrstuvwxyz" not in saved
    assert "HF_TOKEN=***" in saved
    assert "hf_abcdefghijklmnopqrstuvwxyz" not in (out / "launch.sh").read_text()
