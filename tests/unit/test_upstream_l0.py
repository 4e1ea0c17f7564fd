"""``submit.py`` in L0 mode on a fake TensorRT-LLM tree (tests/fixtures/trtllm_tree: unmodified upstream
configs), as a real subprocess, in both flag forms: the 9-flag form (``--run-ci``) and upstream's current
form (no ``--run-ci``; ``--split-group``, ``--stage-name``, ``--cluster-name``).

Every test id the tree offers (disagg e2e / gen_only, every aggregated server, ctx_only) renders the node
count upstream's own arithmetic gives, computed here from the YAML; the roles, loading the job's
``PERFSANITY_CONFIG``, see the same topology.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from perfsanity.cli import submit as submit_cli
from perfsanity.spec.config import load_config, read_yaml
from perfsanity.spec.topology import build_topology

REPO = Path(__file__).resolve().parents[2]
TREE = REPO / "tests/fixtures/trtllm_tree"
SANITY = TREE / "tests/scripts/perf-sanity"
DISAGG = sorted((SANITY / "disaggregated").glob("*.yaml"))
AGGR = sorted((SANITY / "aggregated").glob("*.yaml"))
SCRIPTS = REPO / "jenkins/scripts"
NODE = "perf/test_perf_sanity.py::test_e2e"
MODELS = "/lustre/fsw/models"
PREFIX = f"""#!/bin/bash
#SBATCH --nodes=8
#SBATCH --job-name=perf-sanity-l0
export jobWorkspace=/home/svc/jobs/ws
export pytestCommand="LLM_ROOT=/src LLM_MODELS_ROOT={MODELS} pytest -v --timeout-method=thread"
"""
STAGE = "GB200-8_GPUs-2_Nodes-PyTorch-Perf-Sanity-Post-Merge-1"


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def gpus(side: dict) -> int:
    return side.get("tensor_parallel_size", 1) * side.get("pipeline_parallel_size", 1) * side.get(
        "context_parallel_size", 1)


def upstream_nodes(test_id: str) -> int:
    """TensorRT-LLM submit.py's get_hardware_config, written from docs/upstream/trtllm-l0-facts.md §1.4."""
    labels = test_id.split("-")
    if "disagg" in labels[0]:
        raw = read_yaml(SANITY / "disaggregated" / ("-".join(labels[2:]) + ".yaml"))
        hw, wc = raw["hardware"], raw["worker_config"]
        gpn = hw["gpus_per_node"]
        return (hw["num_ctx_servers"] * ceil_div(gpus(wc["ctx"]), gpn)
                + hw["num_gen_servers"] * ceil_div(gpus(wc["gen"]), gpn))
    if labels[1] == "ctx_only":
        raw = read_yaml(SANITY / "disaggregated" / ("-".join(labels[2:]) + ".yaml"))
        return ceil_div(gpus(raw["worker_config"]["ctx"]), raw["hardware"]["gpus_per_node"])
    raw = read_yaml(SANITY / "aggregated" / f"{labels[1]}.yaml")
    server = next(s for s in raw["server_configs"] if s["name"] == "-".join(labels[2:]))
    return ceil_div(server.get("world_size") or gpus(server), raw["hardware"]["gpus_per_node"])


IDS = (
    [f"disagg_upload-{mode}-{p.stem}" for p in DISAGG for mode in ("e2e", "gen_only")]
    + [f"aggr_upload-{p.stem}-{s['name']}" for p in AGGR for s in read_yaml(p)["server_configs"]]
    + [f"aggr_upload-ctx_only-{p.stem}" for p in DISAGG if "pp8" in p.stem]
)
FORMS = ("nine-flag", "upstream")


def write_inputs(d: Path, lines: str, prefix: str = PREFIX) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "prefix.sh").write_text(prefix)
    (d / "srun_args.txt").write_text("--container-image=urm.example/trtllm:x\n--container-mounts=/l:/l\n--mpi=pmix\n")
    (d / "test_list.txt").write_text(lines)


def l0_argv(d: Path, form: str, *, llm_src: Path = TREE, split_group: int = 1, cluster_name: str = "gcp-nrt") -> list:
    argv = ["--llm-src", llm_src, "--test-list", d / "test_list.txt",
            "--draft-launch-sh", SCRIPTS / "perf/disaggregated/slurm_launch_draft.sh",
            "--launch-sh", d / "job/launch.sh", "--run-sh", SCRIPTS / "slurm_run.sh",
            "--install-sh", SCRIPTS / "slurm_install.sh", "--script-prefix", d / "prefix.sh",
            "--srun-args", d / "srun_args.txt"]
    if form == "nine-flag":
        return ["--run-ci", *argv]
    return [*argv, "--split-group", str(split_group), "--stage-name", STAGE, "--cluster-name", cluster_name]


L0_ENV = ("AGG_CONFIG_FOLDER", "DISAGG_CONFIG_FOLDER", "LLM_MODELS_ROOT", "pytestCommand", "PERFSANITY_CLUSTER")


def run_in_process(argv: list, h) -> object:
    """``submit.py ARGV`` through its real entry point in this process (the matrix below is 30 jobs;
    a subprocess each would cost a second of imports apiece on a shared 2-core machine)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for var in L0_ENV:
            mp.delenv(var, raising=False)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = submit_cli.main([str(a) for a in argv])
    return h.Result(tuple(map(str, argv)), rc, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def rendered(tmp_path_factory, h) -> dict:
    base = tmp_path_factory.mktemp("upstream-l0")
    out = {}
    for i, test_id in enumerate(IDS):
        for form in FORMS:
            d = base / f"{i}-{form}"
            write_inputs(d, f"{NODE}[{test_id}] TIMEOUT (90)\n")
            out[(test_id, form)] = (run_in_process(l0_argv(d, form), h), d)
    return out


@pytest.mark.parametrize("form", FORMS)
def test_both_forms_as_a_subprocess(form: str, tmp_path: Path, h) -> None:
    """The real ``submit.py`` process, once per form, renders what the in-process matrix renders."""
    for where, run in (("proc", lambda argv: h.run_submit(argv, env=h.cli_env())),
                       ("inproc", lambda argv: run_in_process(argv, h))):
        write_inputs(tmp_path / where, f"{NODE}[{IDS[0]}] TIMEOUT (90)\n")
        res = run(l0_argv(tmp_path / where, form))
        assert res.returncode == 0, res.stderr
    proc, inproc = ((tmp_path / w / "job/launch.sh").read_text() for w in ("proc", "inproc"))
    assert proc.replace(str(tmp_path / "proc"), "<D>") == inproc.replace(str(tmp_path / "inproc"), "<D>")
    assert exports(proc)["totalNodes"] == str(upstream_nodes(IDS[0]))


def exports(text: str) -> dict[str, str]:
    return dict(re.findall(r"^export (\w+)=(.*)$", text, flags=re.M))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("test_id", IDS)
def test_every_upstream_id_renders_upstream_node_count(test_id: str, form: str, rendered: dict, h) -> None:
    res, d = rendered[(test_id, form)]
    assert res.returncode == 0, res.stderr
    launch = d / "job/launch.sh"
    text = launch.read_text()
    ex = exports(text)
    nodes = upstream_nodes(test_id)
    assert ex["totalNodes"] == str(nodes)
    assert ex["PERFSANITY_TEST_ID"] == test_id
    assert ex["PERFSANITY_TIMEOUT"] == "5400"  # TIMEOUT (90): upstream configs set no slurm.timeout
    assert ("PERFSANITY_RUN_CI" in ex) == (form == "nine-flag")
    info = json.loads((d / "job/job.json").read_text())
    assert info["total_nodes"] == nodes and info["node_rule"] == "upstream"
    assert "node rule: upstream" in res.stdout
    # the roles load PERFSANITY_CONFIG (the effective config in the job dir) and get the same job
    config_path = Path(ex["PERFSANITY_CONFIG"])
    assert config_path.is_relative_to(d / "job/config")
    mode = test_id.split("-")[1] if test_id.startswith("disagg") else None
    roles = load_config(config_path, overrides={"benchmark.mode": mode} if mode else None)
    topo = build_topology(roles)
    assert topo.total_nodes == nodes and roles.test_id(mode) == test_id
    assert roles.slurm.timeout == 5400
    if roles.metadata.model_dir_name:  # <model_path> filled from the prefix's LLM_MODELS_ROOT
        assert roles.environment.model_path == f"{MODELS}/{roles.metadata.model_dir_name}"
    assert "<" not in config_path.read_text()  # no placeholder reaches the roles
    if form == "upstream":
        assert info["l0"]["stage_name"] == STAGE and info["l0"]["split_group"] == 1
        assert "--cluster-name 'gcp-nrt': no cluster defaults file" in res.stdout
        assert "proceeding without cluster defaults" in info["notes"][0]


@pytest.mark.parametrize("test_id", [IDS[0], IDS[-1], f"aggr_upload-{AGGR[0].stem}-r1_fp4_v2_tep8_mtp3"])
def test_launch_sh_is_clean_bash(test_id: str, rendered: dict, h) -> None:
    res, d = rendered[(test_id, "upstream")]
    assert res.returncode == 0, res.stderr
    launch = d / "job/launch.sh"
    assert h.bash_n(launch).returncode == 0
    sc = h.shellcheck(launch)
    assert sc.returncode == 0 and not sc.stdout, sc.stdout


def test_node_slices_follow_upstream(rendered: dict) -> None:
    """Generation servers first: gb200 128k8k has GEN_0 (TP16) on nodes 0-3 and CTX_0 (PP8) on 4-5; b200
    has GEN_0 (TP8) on node 0 and its 4-GPU CTX_0 alone on node 1."""
    res, d = rendered[(f"disagg_upload-e2e-{DISAGG[1].stem}", "upstream")]
    text = (d / "job/launch.sh").read_text()
    assert "roleNames=(GEN_0 CTX_0 DISAGG_SERVER BENCHMARK)\n" in text
    assert "roleNodes=('0 1 2 3' '4 5' 0 0)\n" in text
    res, d = rendered[(f"disagg_upload-e2e-{DISAGG[0].stem}", "nine-flag")]
    text = (d / "job/launch.sh").read_text()
    assert "roleNodes=(0 1 0 0)\n" in text and "roleGpus=(8 4 0 0)\n" in text


# ---- packing in L0 only on request -----------------------------------------------------------


def test_l0_packs_only_with_pack_true(tmp_path: Path, h) -> None:
    """Two TP1 servers on 8-GPU nodes: upstream's rule gives 2 nodes; ``hardware.pack: true`` gives 1."""
    src = read_yaml(DISAGG[0])  # b200: gpn 8
    src["worker_config"]["ctx"]["tensor_parallel_size"] = 1
    src["worker_config"]["ctx"]["moe_expert_parallel_size"] = 1
    src["worker_config"]["gen"]["tensor_parallel_size"] = 1
    src["worker_config"]["gen"]["moe_expert_parallel_size"] = 1
    folder = tmp_path / "cfgs"
    folder.mkdir()
    (folder / "small.yaml").write_text(yaml.safe_dump(src))
    src["hardware"]["pack"] = True
    (folder / "small-packed.yaml").write_text(yaml.safe_dump(src))
    env = h.cli_env(DISAGG_CONFIG_FOLDER=str(folder))
    got = {}
    for name in ("small", "small-packed"):
        d = tmp_path / name
        write_inputs(d, f"{NODE}[disagg_upload-e2e-{name}]\n")
        res = h.run_submit(l0_argv(d, "upstream", llm_src=tmp_path / "llm"), env=env)
        assert res.returncode == 0, res.stderr
        got[name] = (exports((d / "job/launch.sh").read_text())["totalNodes"], res.stdout)
    assert got["small"][0] == "2" and "node rule: upstream" in got["small"][1]
    assert got["small-packed"][0] == "1" and "node rule: packed" in got["small-packed"][1]


def test_jenkins_prefix_is_sized_as_the_l0_plan(tmp_path: Path, h) -> None:
    """Our Jenkins path renders the #SBATCH prefix before the L0 submit: a config that leaves
    ``hardware.pack`` unset gets upstream's node rule in both (2 nodes), not the packed rule (1)."""
    import subprocess
    import sys

    src = read_yaml(DISAGG[0])  # b200: gpn 8
    for role in ("ctx", "gen"):
        src["worker_config"][role]["tensor_parallel_size"] = 1
        src["worker_config"][role]["moe_expert_parallel_size"] = 1
    src["hardware"].pop("pack", None)
    folder = tmp_path / "cfgs"
    folder.mkdir()
    (folder / "small.yaml").write_text(yaml.safe_dump(src))
    ws = tmp_path / "ws"
    res = subprocess.run([sys.executable, "-m", "perfsanity.cli.jenkins", "--stage", "validate",
                          "--test", "disagg_upload-e2e-small", "--workspace", str(ws),
                          "--cluster", str(REPO / "test_configs/clusters/example-gb200.yaml")],
                         env=h.cli_env(DISAGG_CONFIG_FOLDER=str(folder)), cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert "#SBATCH --nodes=2\n" in (ws / "script_prefix.sh").read_text()
    launch = (ws / "launch.sh").read_text()
    assert exports(launch)["totalNodes"] == "2" and "#SBATCH --nodes=2\n" in launch


def test_direct_mode_keeps_packing(tmp_path: Path, h) -> None:
    cluster = REPO / "test_configs/clusters/example-gb200.yaml"
    res = h.run_submit(["--config", DISAGG[0], "--cluster", cluster, "--out", tmp_path / "o", "--dry-run"])
    assert res.returncode == 0, res.stderr
    assert "node rule: packed" in res.stdout
    assert json.loads((tmp_path / "o/job.json").read_text())["node_rule"] == "packed"


# ---- --split-group, TIMEOUT, --cluster-name ------------------------------------------------------


def test_split_group_picks_the_nth_line(tmp_path: Path, h) -> None:
    lines = "".join(f"{NODE}[{t}] TIMEOUT ({60 + i})\n" for i, t in enumerate(IDS[:3]))
    write_inputs(tmp_path, f"# a comment\n\n{lines}")
    for group, want in ((0, 0), (1, 0), (3, 2)):
        res = h.run_submit(l0_argv(tmp_path, "upstream", split_group=group))
        assert res.returncode == 0, res.stderr
        ex = exports((tmp_path / "job/launch.sh").read_text())
        assert ex["PERFSANITY_TEST_ID"] == IDS[want]
        assert ex["PERFSANITY_TIMEOUT"] == str((60 + want) * 60)
    res = h.run_submit(l0_argv(tmp_path, "upstream", split_group=4))
    h.assert_one_line_error(res, "--split-group 4 is beyond the 3 test(s)")
    # the 9-flag form keeps its rule: one test per job
    res = h.run_submit(l0_argv(tmp_path, "nine-flag"))
    h.assert_one_line_error(res, "L0 mode runs one test per job, found 3")


def test_split_group_least_duration(tmp_path: Path, h) -> None:
    ids = IDS[:3]
    durations = {f"{NODE}[{ids[0]}]": 100.0, f"{NODE}[{ids[1]}]": 50.0, f"{NODE}[{ids[2]}]": 10.0}
    (tmp_path / "durations.json").write_text(json.dumps(durations))
    cmd = f"pytest --splits 3 --group {{g}} --splitting-algorithm least_duration --durations-path {tmp_path}/durations.json"
    for group, want in ((1, 0), (2, 1), (3, 2)):
        prefix = PREFIX + f'export pytestCommand="LLM_MODELS_ROOT={MODELS} {cmd.format(g=group)}"\n'
        write_inputs(tmp_path, "".join(f"{NODE}[{t}]\n" for t in reversed(ids)), prefix=prefix)
        res = h.run_submit(l0_argv(tmp_path, "upstream", split_group=group))
        assert res.returncode == 0, res.stderr
        assert exports((tmp_path / "job/launch.sh").read_text())["PERFSANITY_TEST_ID"] == ids[want]
    res = h.run_submit(l0_argv(tmp_path, "upstream", split_group=1))  # the prefix says --group 3
    h.assert_one_line_error(res, "--split-group: 1 differs from pytestCommand's --group 3")


def test_timeout_never_lengthens_the_configs_own_bound(tmp_path: Path, h) -> None:
    for minutes, want in ((5, "300"), (600, "900")):  # mocker-ctx1-gen1 sets slurm.timeout: 900
        write_inputs(tmp_path, f"{NODE}[disagg_upload-e2e-mocker-ctx1-gen1] TIMEOUT ({minutes})\n")
        res = h.run_submit(l0_argv(tmp_path, "upstream", llm_src=REPO))
        assert res.returncode == 0, res.stderr
        assert exports((tmp_path / "job/launch.sh").read_text())["PERFSANITY_TIMEOUT"] == want


def test_cluster_name_selects_cluster_defaults(tmp_path: Path, h) -> None:
    llm = tmp_path / "llm"
    shutil.copytree(TREE / "tests", llm / "tests")
    (llm / "test_configs/clusters").mkdir(parents=True)
    (llm / "test_configs/clusters/lab.yaml").write_text(
        "name: gb200-lab\ndefaults:\n  slurm: {partition: lab}\nmodel_root: /lab/models\n")
    d = tmp_path / "job-in"
    write_inputs(d, f"{NODE}[{IDS[0]}]\n", prefix="#!/bin/bash\n#SBATCH --nodes=2\n")  # no LLM_MODELS_ROOT
    res = h.run_submit(l0_argv(d, "upstream", llm_src=llm, cluster_name="gb200-lab"))
    assert res.returncode == 0, res.stderr
    assert f"cluster defaults {llm / 'test_configs/clusters/lab.yaml'}" in res.stdout
    config = yaml.safe_load((d / "job/config.resolved.yaml").read_text())
    assert config["environment"]["model_path"] == "/lab/models/DeepSeek-R1-0528-FP4-v2"
    assert config["slurm"]["partition"] == "lab"
    assert "export PERFSANITY_CLUSTER=" in (d / "job/launch.sh").read_text()
    # an unknown name: the placeholder <model_path> stays unset, and that is the one error
    res = h.run_submit(l0_argv(d, "upstream", llm_src=llm, cluster_name="aws-cmh"))
    h.assert_one_line_error(res, "environment.model_path: is the placeholder '<model_path>'", "--cluster FILE",
                            "--set environment.model_path=VALUE")
    # ... and the other way the error names works in L0 mode too
    res = h.run_submit([*l0_argv(d, "upstream", llm_src=llm, cluster_name="aws-cmh"),
                        "--set", "environment.model_path=/given/model"])
    assert res.returncode == 0, res.stderr
    assert f"from     {llm / 'tests/scripts/perf-sanity/disaggregated' / (IDS[0].split('-', 2)[2] + '.yaml')}" in res.stdout
    config = yaml.safe_load((d / "job/config.resolved.yaml").read_text())
    assert config["environment"]["model_path"] == "/given/model"


def test_not_found_names_every_place_searched(tmp_path: Path, h) -> None:
    write_inputs(tmp_path, f"{NODE}[disagg_upload-e2e-no_such_cfg]\n")
    res = h.run_submit(l0_argv(tmp_path, "upstream"))
    h.assert_one_line_error(res, "no config named 'no_such_cfg'",
                            str(SANITY / "disaggregated/no_such_cfg.yaml"),
                            str(TREE / "test_configs/disagg/perf/no_such_cfg.yaml"),
                            str(REPO / "test_configs/disagg/perf/no_such_cfg.yaml"))
    write_inputs(tmp_path, f"{NODE}[aggr_upload-{AGGR[0].stem}-no_server]\n")
    res = h.run_submit(l0_argv(tmp_path, "upstream"))
    h.assert_one_line_error(res, "has no server named 'no_server'", "r1_fp4_v2_tep8_mtp3")
    assert not (tmp_path / "job").exists()


def test_env_overrides_relative_to_llm_src(tmp_path: Path, h) -> None:
    llm = tmp_path / "llm"
    shutil.copytree(SANITY / "aggregated", llm / "my/agg")
    d = tmp_path / "in"
    test_id = f"aggr_upload-{AGGR[1].stem}-gpt_oss_fp4_tp2_mtp0_1k1k"
    write_inputs(d, f"{NODE}[{test_id}]\n")
    res = h.run_submit(l0_argv(d, "nine-flag", llm_src=llm), env=h.cli_env(AGG_CONFIG_FOLDER="my/agg"))
    assert res.returncode == 0, res.stderr
    info = json.loads((d / "job/job.json").read_text())
    assert info["l0"]["config_source"] == str(llm / f"my/agg/{AGGR[1].name}")
    assert info["total_nodes"] == 1


def test_l0_flags_are_rejected_in_direct_mode(tmp_path: Path, h) -> None:
    res = h.run_submit(["--config", REPO / "test_configs/disagg/perf/mocker-ctx1-gen1.yaml", "--out", tmp_path / "o",
                        "--split-group", "1"])
    assert res.returncode == 2 and "--split-group is an L0 flag" in res.stderr
