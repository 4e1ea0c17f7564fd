"""TensorRT-LLM's own perf-sanity configs (tests/fixtures/trtllm_tree, unmodified upstream files) through
perfsanity.spec: placeholders mean "not set", the aggregated format is one case per server, ctx_only
runs a disaggregated config's context worker alone, and the trtllm engine YAML comes from the server's
engine keys (golden-tested)."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest
import yaml

from perfsanity.common.errors import ConfigError
from perfsanity.engines.trtllm import llm_api_options, render_yaml, worker_section
from perfsanity.spec import upstream
from perfsanity.spec.cluster import load_cluster
from perfsanity.spec.config import config_from_dict, load_config, read_yaml
from perfsanity.spec.topology import build_topology

REPO = Path(__file__).resolve().parents[2]
TREE = REPO / "tests/fixtures/trtllm_tree"
SANITY = TREE / "tests/scripts/perf-sanity"
DISAGG = sorted((SANITY / "disaggregated").glob("*.yaml"))
AGGR = sorted((SANITY / "aggregated").glob("*.yaml"))
GOLDEN = TREE / "golden"
UPDATE = os.environ.get("PERFSANITY_UPDATE_GOLDEN") == "1"
EXAMPLE_CLUSTER = REPO / "test_configs/clusters/example-gb200.yaml"
DSR1_1K = SANITY / "disaggregated/gb200_deepseek-r1-fp4_1k1k_con2048_ctx2_dep4_gen1_dep16_eplb0_mtp3_ccb-NIXL.yaml"
DSR1_128K = SANITY / "disaggregated/gb200_deepseek-r1-fp4_128k8k_con128_ctx1_pp8_gen1_dep16_eplb0_mtp1_ccb-NIXL.yaml"
R1_AGG = SANITY / "aggregated/deepseek_r1_fp4_v2_2_nodes_grace_blackwell.yaml"
GPT_OSS = SANITY / "aggregated/gpt_oss_120b_fp4_blackwell.yaml"


def test_fixture_tree_is_complete() -> None:
    assert len(DISAGG) == 3 and len(AGGR) == 2
    readme = (TREE / "README.md").read_text()
    for path in [*DISAGG, *AGGR]:
        assert path.name in readme  # every data file names its upstream source


# ---- placeholders ----------------------------------------------------------------------------


def test_strip_placeholders_reports_where() -> None:
    raw = {"slurm": {"partition": "<partition>", "job_name": "x"}, "environment": {"model_path": " <model_path> "},
           "list": ["<kept>"], "metadata": {"model_name": "a<b>c"}}
    clean, found = upstream.strip_placeholders(raw)
    assert found == {"slurm.partition": "<partition>", "environment.model_path": "<model_path>"}
    assert clean == {"slurm": {"job_name": "x"}, "environment": {}, "list": ["<kept>"], "metadata": {"model_name": "a<b>c"}}
    assert raw["slurm"]["partition"] == "<partition>"  # the caller's mapping is untouched


@pytest.mark.parametrize("path", DISAGG, ids=[p.stem for p in DISAGG])
def test_unmodified_disagg_config_loads_placeholders_unset(path: Path) -> None:
    config = load_config(path)
    assert config.slurm.partition is None and config.slurm.account is None
    assert config.environment.model_path is None and config.container_image is None
    assert config.environment.work_dir is None
    assert set(config.unset_placeholders) == {
        "slurm.partition", "slurm.account", "environment.container_mount", "environment.container_image",
        "environment.model_path", "environment.work_dir"}
    assert config.slurm.job_time == "02:00:00"  # unquoted 02:00:00 is YAML 1.1's base-60 int 7200
    assert config.metadata.backend == "trtllm"
    with pytest.raises(ConfigError) as info:
        config.require("environment.model_path")
    msg = str(info.value)
    assert msg.startswith(f"{path}: environment.model_path: is the placeholder '<model_path>'")
    assert "--cluster FILE" in msg and "--set environment.model_path=VALUE" in msg


def test_cluster_defaults_fill_placeholders() -> None:
    config = load_config(DSR1_1K, cluster=load_cluster(EXAMPLE_CLUSTER))
    assert config.slurm.partition == "batch" and config.slurm.account == "perf"
    assert config.environment.model_path == "/lustre/models/DeepSeek-R1-0528-FP4-v2"  # model_root + model_dir_name
    assert config.container_image == "registry.example.com/trtllm/release:nightly"
    assert "environment.model_path" not in config.unset_placeholders
    assert "slurm.partition" not in config.unset_placeholders
    config.require("environment.model_path")  # filled: no error


def test_overrides_fill_placeholders() -> None:
    config = load_config(DSR1_1K, overrides={"environment.model_path": "/m"})
    assert config.environment.model_path == "/m"
    assert "environment.model_path" not in config.unset_placeholders


def test_placeholder_in_our_own_format_is_unset_too() -> None:
    raw = {"metadata": {"model_name": "m"}, "slurm": {"partition": "<partition>"},
           "worker_config": {"gen": {}, "ctx": {}}}
    config = config_from_dict(raw, name="t", source="t.yaml")
    assert config.slurm.partition is None and config.unset_placeholders == {"slurm.partition": "<partition>"}


def test_client_env_var_is_benchmark_env() -> None:
    raw = {"metadata": {"model_name": "m"}, "worker_config": {"gen": {}, "ctx": {}},
           "environment": {"client_env_var": "A=1", "benchmark_env_var": "B=2"}}
    config = config_from_dict(raw, name="t", source="t.yaml")
    assert [(e.name, e.value) for e in config.environment.benchmark_env_var] == [("B", "2"), ("A", "1")]


# ---- upstream's disaggregated configs -------------------------------------------------------------


def upstream_disagg_nodes(raw: dict) -> int:
    """TensorRT-LLM submit.py's arithmetic, written from the facts file (no packing)."""
    hw, wc = raw["hardware"], raw["worker_config"]

    def gpus(side: dict) -> int:
        return (side.get("tensor_parallel_size", 1) * side.get("pipeline_parallel_size", 1)
                * side.get("context_parallel_size", 1))

    gpn = hw["gpus_per_node"]
    return (hw["num_ctx_servers"] * -(-gpus(wc["ctx"]) // gpn)
            + hw["num_gen_servers"] * -(-gpus(wc["gen"]) // gpn))


@pytest.mark.parametrize("path", DISAGG, ids=[p.stem for p in DISAGG])
def test_disagg_topology_matches_upstream_without_packing(path: Path) -> None:
    raw = read_yaml(path)
    config = load_config(path, overrides={"hardware.pack": False})
    topo = build_topology(config)
    assert topo.rule == "upstream"
    assert topo.total_nodes == upstream_disagg_nodes(raw)
    assert [p.role for p in topo.workers][0] == "GEN_0"  # generation servers take nodes first


def test_known_node_counts() -> None:
    expect = {DSR1_1K.stem: 6, DSR1_128K.stem: 6,
              "b200_deepseek-r1-fp4_1k1k_con1_ctx1_dep4_gen1_tep8_eplb0_mtp3_ccb-NIXL": 2}
    for path in DISAGG:
        assert build_topology(load_config(path, overrides={"hardware.pack": False})).total_nodes == expect[path.stem]


# ---- upstream's aggregated configs ----------------------------------------------------------------


AGGR_CASES = [(p, name) for p in AGGR for name in upstream.server_names(read_yaml(p))]


@pytest.mark.parametrize(("path", "server"), AGGR_CASES, ids=[f"{p.stem}-{s}" for p, s in AGGR_CASES])
def test_every_server_is_one_aggregated_case(path: Path, server: str) -> None:
    raw = read_yaml(path)
    entry = next(s for s in raw["server_configs"] if s["name"] == server)
    config = load_config(path, server=server, overrides={"hardware.pack": False})
    assert config.kind == "aggr" and config.name == f"{path.stem}-{server}"
    assert config.test_id() == f"aggr_upload-{path.stem}-{server}"
    clients = entry["client_configs"]
    assert config.benchmark.concurrency_list == tuple(c["concurrency"] for c in clients)
    assert config.benchmark.multi_round == clients[0]["iterations"]  # requests = concurrency × iterations
    assert (config.benchmark.input_length, config.benchmark.output_length) == (clients[0]["isl"], clients[0]["osl"])
    assert config.benchmark.dataset_file == clients[0].get("dataset_file")
    server_keys = worker_section(config, "server").engine_options()
    for key in ("name", "client_configs", "server_env_var", "model_name"):
        assert key not in server_keys
    assert server_keys["max_batch_size"] == entry["max_batch_size"]
    if entry.get("server_env_var"):
        assert [f"{e.name}={e.value}" for e in config.environment.worker_env_var] == [entry["server_env_var"]]
    topo = build_topology(config)
    gpus = entry["tensor_parallel_size"] * entry.get("pipeline_parallel_size", 1)
    gpn = raw["hardware"]["gpus_per_node"]
    assert topo.total_nodes == -(-gpus // gpn)
    assert topo.role("SERVER_0").gpus_per_node == min(gpus, gpn)


def test_aggregated_needs_a_server_when_several() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(GPT_OSS)
    assert "has 4 servers" in str(info.value) and "gpt_oss_fp4_tp2_mtp0_1k1k" in str(info.value)
    with pytest.raises(ConfigError, match="no server named 'nope'"):
        load_config(GPT_OSS, server="nope")
    with pytest.raises(ConfigError, match="no server 'x' to select"):
        load_config(DSR1_1K, server="x")


def test_aggregated_clients_must_agree_except_concurrency() -> None:
    raw = read_yaml(GPT_OSS)
    raw["server_configs"][3]["client_configs"][1]["isl"] = 1024
    with pytest.raises(ConfigError) as info:
        upstream.aggregated_case(raw, "gpt_oss_fp4_tp1_mtp0_8k1k", config="g", source="g.yaml")
    assert "server_configs[3].client_configs[1].isl" in str(info.value)


def test_aggregated_world_size_must_match() -> None:
    raw = read_yaml(GPT_OSS)
    raw["server_configs"][1]["world_size"] = 4
    with pytest.raises(ConfigError, match=r"server_configs\[1\].world_size"):
        upstream.aggregated_case(raw, "gpt_oss_fp4_tp2_mtp0_1k1k", config="g", source="g.yaml")


def test_config_from_dict_refuses_the_unconverted_format() -> None:
    with pytest.raises(ConfigError, match="aggregated format"):
        config_from_dict(read_yaml(R1_AGG), name="x", source="x.yaml")


def test_ctx_only_runs_the_context_worker_alone() -> None:
    name, raw = upstream.ctx_only_case(read_yaml(DSR1_128K), config=DSR1_128K.stem, source=str(DSR1_128K))
    assert name == f"ctx_only-{DSR1_128K.stem}"
    config = config_from_dict(raw, name=name, kind="aggr", source=str(DSR1_128K))
    assert config.test_id() == f"aggr_upload-ctx_only-{DSR1_128K.stem}"
    server = worker_section(config, "server").engine_options()
    assert "cache_transceiver_config" not in server and server["disable_overlap_scheduler"] is True
    assert server["pipeline_parallel_size"] == 8
    assert config.benchmark.output_length == 1 and config.benchmark.dataset_file is None
    topo = build_topology(config_from_dict({**raw, "hardware": {**raw["hardware"], "pack": False}}, name=name,
                                           kind="aggr", source="x"))
    assert topo.total_nodes == 2  # PP8 on 4-GPU nodes


# ---- engine YAML (golden) -------------------------------------------------------------------------

ENGINE_GOLDEN = {
    "r1_fp4_v2_dep8_mtp1_1k1k": (R1_AGG, "r1_fp4_v2_dep8_mtp1_1k1k"),
    "gpt_oss_fp4_tp1_eagle3_startup": (GPT_OSS, "gpt_oss_fp4_tp1_eagle3_startup"),
}


@pytest.mark.parametrize("name", sorted(ENGINE_GOLDEN))
def test_trtllm_engine_yaml_from_server_keys_golden(name: str) -> None:
    path, server = ENGINE_GOLDEN[name]
    config = load_config(path, server=server)
    got = render_yaml(llm_api_options(worker_section(config, "server")))
    entry = next(s for s in read_yaml(path)["server_configs"] if s["name"] == server)
    engine_keys = {k: v for k, v in entry.items() if k not in upstream.SERVER_HARNESS_KEYS}
    assert yaml.safe_load(got) == engine_keys  # every engine key, and nothing else, as written upstream
    golden = GOLDEN / f"{name}.extra-llm-api-config.yml"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        golden.write_text(got)
    assert golden.is_file(), f"missing {golden}; run with PERFSANITY_UPDATE_GOLDEN=1"
    want = golden.read_text()
    if got != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True), str(golden), "rendered"))
        pytest.fail(f"engine YAML differs from {golden.name}:\n{diff}")


# ---- --cluster-name ------------------------------------------------------------------------------


def test_find_cluster_by_stem_or_name(tmp_path: Path) -> None:
    from perfsanity.spec.cluster import find_cluster

    (tmp_path / "a").mkdir()
    (tmp_path / "a/lab.yaml").write_text("name: gb200-lab\n")
    (tmp_path / "a/broken.yaml").write_text("name: [\n")  # unreadable files are skipped, not fatal
    clusters = REPO / "test_configs/clusters"
    assert find_cluster("local-slurm", [tmp_path / "a", clusters]) == clusters / "local-slurm.yaml"
    assert find_cluster("gb200-lab", [tmp_path / "a", clusters]) == tmp_path / "a/lab.yaml"
    assert find_cluster("lab", [tmp_path / "a"]) == tmp_path / "a/lab.yaml"
    for name in ("gcp-nrt", "", "../a/lab", ".hidden"):
        assert find_cluster(name, [tmp_path / "a", clusters, tmp_path / "missing"]) is None
