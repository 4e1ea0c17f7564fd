"""perfsanity.spec.cluster: defaults < test YAML < overrides, env prepended (test wins), aliases, model_root."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from perfsanity.common.errors import ConfigError
from perfsanity.spec.cluster import ClusterDefaults, cluster_from_env_or_arg, load_cluster
from perfsanity.spec.config import config_from_dict, read_yaml
from perfsanity.spec.envvars import apply

ROOT = Path(__file__).resolve().parents[2] / "test_configs"
EXAMPLE = ROOT / "clusters/example-gb200.yaml"
LOCAL = ROOT / "clusters/local-slurm.yaml"
MOCKER = ROOT / "disagg/perf/mocker-ctx1-gen1.yaml"


def raw() -> dict:
    return read_yaml(MOCKER)


def cluster(**kw) -> ClusterDefaults:
    return ClusterDefaults.model_validate(kw)


@pytest.mark.parametrize("path", [EXAMPLE, LOCAL], ids=lambda p: p.stem)
def test_shipped_cluster_files_load(path: Path) -> None:
    c = load_cluster(path)
    assert c.source == str(path)
    config = config_from_dict(raw(), name="t", cluster=c)
    assert config.hardware.gpus_per_node == 4


def test_precedence_defaults_test_overrides() -> None:
    c = cluster(defaults={
        "slurm": {"partition": "from-cluster", "account": "acct", "job_time": "03:00:00"},
        "benchmark": {"multi_round": 3, "input_length": 7},
    })
    r = raw()
    r["slurm"]["job_time"] = "00:30:00"  # test beats cluster
    config = config_from_dict(r, name="t", cluster=c, overrides={"benchmark.multi_round": 9})
    assert config.slurm.partition == "from-cluster"  # cluster fills what the test leaves out
    assert config.slurm.account == "acct"
    assert config.slurm.job_time == "00:30:00"
    assert config.slurm.job_name == "perfsanity-mocker"  # test value, cluster silent
    assert config.benchmark.input_length == 128  # test beats cluster
    assert config.benchmark.multi_round == 9  # override beats test and cluster
    # built-in defaults fill the rest
    assert config.timeouts.router_ready == 120 and config.benchmark.random_seed == 0


def test_cluster_defaults_are_merged_deeply() -> None:
    c = cluster(defaults={"worker_config": {"gen": {"max_batch_size": 64, "tensor_parallel_size": 4}}})
    config = config_from_dict(raw(), name="t", cluster=c)
    opts = config.worker_config.gen.engine_options()
    assert opts["max_batch_size"] == 64  # from the cluster
    assert opts["tensor_parallel_size"] == 2  # the test's own


def test_env_prepended_and_test_values_win() -> None:
    c = cluster(env="UCX_TLS=rc DYN_LOG=warn SHARED=cluster")
    config = config_from_dict(raw(), name="t", cluster=c)
    env = config.environment
    names = [a.name for a in env.worker_env_var]
    assert names[:3] == ["UCX_TLS", "DYN_LOG", "SHARED"]
    effective = apply(env.worker_env_var, {})
    assert effective == {"UCX_TLS": "rc", "DYN_LOG": "info", "SHARED": "cluster"}  # test's DYN_LOG wins
    assert apply(env.server_env_var, {})["DYN_LOG"] == "info"
    assert apply(env.benchmark_env_var, {}) == {"UCX_TLS": "rc", "DYN_LOG": "warn", "SHARED": "cluster"}


def test_env_prepended_to_mapping_form() -> None:
    c = cluster(env="UCX_TLS=rc DYN_LOG=warn")
    r = raw()
    r["environment"]["worker_env_var"] = {"DYN_LOG": "debug", "SPACED": "a b"}
    config = config_from_dict(r, name="t", cluster=c)
    assert apply(config.environment.worker_env_var, {}) == {"UCX_TLS": "rc", "DYN_LOG": "debug", "SPACED": "a b"}


def test_env_added_when_test_has_no_environment() -> None:
    r = raw()
    del r["environment"]
    config = config_from_dict(r, name="t", cluster=cluster(env="A=1"))
    assert apply(config.environment.worker_env_var, {}) == {"A": "1"}


def test_apply_does_not_modify_its_input() -> None:
    c = load_cluster(EXAMPLE)
    r = raw()
    before = copy.deepcopy(r)
    first = config_from_dict(r, name="t", cluster=c)
    assert r == before
    second = config_from_dict(r, name="t", cluster=c)
    assert first.environment == second.environment  # env not prepended twice
    defaults_before = copy.deepcopy(c.defaults)
    c.apply(raw())
    assert c.defaults == defaults_before


def test_container_alias_and_mounts() -> None:
    c = load_cluster(EXAMPLE)
    config = config_from_dict(raw(), name="t", cluster=c)
    assert config.container_image == "registry.example.com/trtllm/release:nightly"
    assert config.container_mounts == "/lustre:/lustre"
    r = raw()
    r["slurm"]["container_image"] = "my/own:image"  # not an alias: kept as written
    assert config_from_dict(r, name="t", cluster=c).container_image == "my/own:image"
    r = raw()
    r["environment"]["container_image"] = "trtllm-nightly"
    r["slurm"]["container_image"] = None
    got = config_from_dict(r, name="t", cluster=cluster(aliases={"containers": {"trtllm-nightly": "reg/x:1"}}))
    assert got.environment.container_image == "reg/x:1"


def test_model_alias_and_model_root() -> None:
    c = cluster(model_root="/lustre/models/", aliases={"models": {"alias-name": "/fast/alias"}})
    r = raw()  # model_path unset, model_dir_name "tiny"
    assert config_from_dict(r, name="t", cluster=c).environment.model_path == "/lustre/models/tiny"
    r["environment"]["model_path"] = "alias-name"
    assert config_from_dict(r, name="t", cluster=c).environment.model_path == "/fast/alias"
    r["environment"]["model_path"] = "/explicit/path"
    assert config_from_dict(r, name="t", cluster=c).environment.model_path == "/explicit/path"
    r = raw()
    r["metadata"]["model_dir_name"] = "alias-name"  # an alias named like the model dir wins over model_root
    assert config_from_dict(r, name="t", cluster=c).environment.model_path == "/fast/alias"
    r = raw()
    del r["metadata"]["model_dir_name"]
    assert config_from_dict(r, name="t", cluster=c).environment.model_path is None


def test_gpu_type_default() -> None:
    c = cluster(gpu_type="GB200")
    r = raw()
    assert config_from_dict(r, name="t", cluster=c).hardware.gpu_type == "CPU"  # test's own
    del r["hardware"]["gpu_type"]
    assert config_from_dict(r, name="t", cluster=c).hardware.gpu_type == "GB200"


def test_typo_in_cluster_defaults_is_caught_with_its_key() -> None:
    c = cluster(defaults={"benchmark": {"concurency_list": "1"}})
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw(), name="t", source="t.yaml", cluster=c)
    assert info.value.key_path == "benchmark.concurency_list"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("name: x\nenvv: A=1\n", "envv"),
        ("env: 'NOT VALID'\n", "env"),
        ("defaults: 5\n", "defaults"),
        ("aliases: {containers: {a: 1}, other: {}}\n", "aliases"),
    ],
)
def test_bad_cluster_files(tmp_path: Path, text: str, key: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_cluster(p)
    assert info.value.file == str(p)
    assert info.value.key_path.startswith(key)
    assert "\n" not in str(info.value)


def test_cluster_from_env_or_arg(tmp_path: Path) -> None:
    assert cluster_from_env_or_arg(None, {}) is None
    assert cluster_from_env_or_arg(None, {"PERFSANITY_CLUSTER": str(LOCAL)}).name == "local-slurm"
    assert cluster_from_env_or_arg(str(EXAMPLE), {"PERFSANITY_CLUSTER": str(LOCAL)}).name == "example-gb200"
    with pytest.raises(ConfigError, match="file not found"):
        cluster_from_env_or_arg(str(tmp_path / "missing.yaml"), {})
